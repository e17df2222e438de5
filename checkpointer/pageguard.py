"""The page guard: lazily restored processes die with their page server, never read zeros.

What: a lazy restore's page server (lazy.py) forks a small guard process before it takes
over any process (off the restorer's path: the restorer forks once). The server hands
the guard a duplicate of every userfaultfd it serves, with a pidfd of the process (and
once a pidfd of the restore's PID-namespace init), and says when a process
has all its pages ("done": the guard closes its copy). When the server's end of the
socket closes (the server exited) while some process is not done (a SIGKILL, a crash,
an error), the guard SIGKILLs those processes and the namespace init (which takes the
whole namespace along), waits until they are gone, and only then closes its copies.
Why: the kernel unregisters a userfaultfd's ranges when its last descriptor is closed,
and a missing page is then filled with zeros on its next touch: a process whose server
died would run on memory that is not its own. While the guard holds a descriptor, a
fault after the server died waits (killably) instead, and the process is killed there.

Messages (SOCK_SEQPACKET, server to guard): b"space N MARK" (MARK: the path of the
server's mark file for that process, or empty) with [uffd, pidfd] (or [uffd] for
a space a fork made, whose process is reached through the namespace init), b"init" with
[pidfd], b"done N".

Simplifications: only one of the two may die (the server alone, or the guard alone: then
the server goes on serving); a SIGKILL of both at once leaves the processes unprotected.
A child forked by a served process outside a new PID namespace is not killed.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import socket

KILL_WAIT_MS = 60_000  # a killed process is gone within milliseconds; past this, give up waiting


def send_space(sock: socket.socket, number: int, uffd: int, pidfd: int | None, mark: str = "") -> None:
    """`mark`: the server's mark file of that process, removed if the guard kills it."""
    _send(sock, b"space %d %s" % (number, mark.encode()), [uffd] + ([pidfd] if pidfd is not None else []))


def send_init(sock: socket.socket, pidfd: int) -> None:
    _send(sock, b"init", [pidfd])


def send_done(sock: socket.socket, number: int) -> None:
    _send(sock, b"done %d" % number, [])


def _send(sock: socket.socket, message: bytes, fds: list[int]) -> None:
    with contextlib.suppress(OSError):  # the guard is gone: the server serves on unguarded
        socket.send_fds(sock, [message], fds)


def run(sock: socket.socket) -> None:
    """The guard's loop (in its own process): returns once the server has exited and
    nothing is left to guard."""
    spaces: dict[int, list[int]] = {}  # space number -> [uffd, pidfd?]
    marks: dict[int, str] = {}
    inits: list[int] = []
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 64, 2)
        if not message:
            break
        kind, _, rest = message.partition(b" ")
        number, _, mark = rest.partition(b" ")
        if kind == b"space":
            spaces[int(number)] = fds
            marks[int(number)] = mark.decode()
        elif kind == b"init":
            inits += fds
        elif kind == b"done":
            for fd in spaces.pop(int(number), []):
                os.close(fd)
    if spaces:
        pidfds = [fds[1] for fds in spaces.values() if len(fds) > 1] + inits
        for pidfd in pidfds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        for pidfd in pidfds:  # a pidfd turns readable once its process has exited
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.poll(KILL_WAIT_MS)
        for number in spaces:  # the dead server's marks (stale, unlocked: removed for tidiness)
            if marks[number]:
                with contextlib.suppress(OSError):
                    os.unlink(marks[number])
    for fd in [fd for fds in spaces.values() for fd in fds] + inits:
        os.close(fd)
