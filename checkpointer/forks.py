"""Which processes forked since the last look: the kernel's process events connector.

What: `ForkWatch()` subscribes to PROC_EVENT_FORK (netlink, NETLINK_CONNECTOR, the proc
connector, filtered in the kernel to forks); `forks()` drains what came since the last call:
{child pid: parent pid} of every new process on the machine (threads are left out), or None
when that is not known (no connector: not root, or a kernel without it; or the kernel dropped
events because too many came between two calls).
Why: a forked child that writes into memory it shares with its parent and exits between two
checkpoints leaves no trace in any page table that a write tracker could read afterwards
(shared_memory.py must know it existed).

Our own fork snapshots (snapshot.py) are forks too, of the very processes followed: they
are told here (`made_here`) and left out, so that a checkpoint after one does not read
every shared object its parent maps whole again (a snapshot never runs application code).

Simplifications: host PIDs only (the connector speaks the initial PID namespace); every
fork on the machine is received and filtered here, not in the kernel.
"""
from __future__ import annotations

import errno
import socket
import struct
import time

NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC = 11, 1, 1
PROC_CN_MCAST_LISTEN, PROC_EVENT_FORK = 1, 0x1
NLMSG_DONE = 3
_NLMSG_HEADER, _CN_MSG = "IHHII", "IIIIHH"
_EVENT_AT = struct.calcsize(_NLMSG_HEADER) + struct.calcsize(_CN_MSG)   # struct proc_event in a message
_FORK_AT = _EVENT_AT + 16       # after what, cpu, timestamp_ns: parent pid, tgid, child pid, tgid
RECEIVE_BUFFER = 4 << 20        # ~5,000 forks between two calls before the kernel drops events
SO_RCVBUFFORCE = 33             # (not in Python's socket module)
OURS_FORGOTTEN_AFTER_S = 5.0    # a snapshot's fork event is read by the next window, 10-1000 ms on

_ours: dict[tuple[int, int], float] = {}    # (child, parent) of our fork snapshots -> when made


def made_here(child: int, parent: int) -> None:
    """Tell every ForkWatch that the fork of `child` from `parent` (host PIDs) is a
    snapshot made by this process (snapshot.py): it runs no application code and
    writes nothing, so it is not a fork `forks()` reports."""
    _ours[(child, parent)] = time.monotonic()


class ForkWatch:
    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            sock.bind((0, CN_IDX_PROC))
            listen = struct.pack("II", PROC_CN_MCAST_LISTEN, PROC_EVENT_FORK)  # struct proc_input: forks only
            cn_msg = struct.pack(_CN_MSG, CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(listen), 0) + listen
            sock.send(struct.pack(_NLMSG_HEADER, struct.calcsize(_NLMSG_HEADER) + len(cn_msg), NLMSG_DONE, 0, 0, 0)
                      + cn_msg)
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        self.sock = sock

    def forks(self) -> dict[int, int] | None:
        """{child: parent} (host PIDs) of the processes forked since the last call; None if unknown."""
        if self.sock is None:
            return None
        forked: dict[int, int] | None = {}
        while True:
            try:
                message = self.sock.recv(4096)
            except BlockingIOError:
                _forget_old_snapshots()
                return forked
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                forked = None       # events were lost; read on, to start afresh
                continue
            if forked is None or len(message) < _FORK_AT + 16:
                continue
            what = struct.unpack_from("I", message, _EVENT_AT)[0]
            _, parent, child_pid, child = struct.unpack_from("IIII", message, _FORK_AT)
            if what == PROC_EVENT_FORK and child_pid == child and _ours.pop((child, parent), None) is None:
                forked[child] = parent      # a process, not a thread, nor one of our snapshots

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _forget_old_snapshots() -> None:
    """Snapshots whose event some other ForkWatch took, or that came before any watch: a
    PID used again much later must not pass for one of ours."""
    now = time.monotonic()
    for key in [key for key, made in _ours.items() if now - made > OURS_FORGOTTEN_AFTER_S]:
        del _ours[key]
