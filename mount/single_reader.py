"""Fewer scheduler passes per FUSE request: pyfuse3's single reader task, tuned.

pyfuse3 (3.5) reads /dev/fuse in one or more reader tasks that take turns through a
`trio.Lock` taken around every wait for the next request, and waits for each request
with `trio.lowlevel.wait_readable`. Both pass through trio's scheduler: the lock always
(a cancel-shielded checkpoint, even when no other task wants it), the wait once more
plus an epoll registration, an epoll_wait and its removal. For a GETATTR that answers
from memory, those passes were most of the daemon's CPU time (a trivial pyfuse3 file
system answering from a dict: ~60-80 us per GETATTR; without the lock ~55, and with the
wait below ~40, loaded machine).

`single_reader_session()` hands pyfuse3, while it serves, a view of the trio module in
which
- `Lock` is a no-op async context manager (one reader task: a lock orders nothing);
- `lowlevel.wait_readable` first asks poll(2) whether the next request is there or
  arrives within POLL_MS (a client that keeps a file system busy sends its next request
  microseconds after the answer), and only when none comes waits through trio. So that
  the other tasks (checkpoints, the control socket, worker-thread results) still run
  while requests keep coming, the scheduler gets a pass at least every SCHEDULER_EVERY_S,
  and at once when a periodic turn announced with `announce_turn` (the mount's
  checkpoints) is due; the poll waits no longer than until that turn. The poll blocks
  the event loop for at most POLL_MS, only right after a request.

pyfuse3 creates its lock at the first wait of a session, so the view must be in place
before `pyfuse3.main` starts and for as long as it runs.

Simplifications: this relies on how pyfuse3 3.5 finds trio (the module global `trio` of
the pyfuse3 extension), creates its reader lock (`trio.Lock()`, its only use of Lock)
and waits (`trio.lowlevel.wait_readable(fd)` on /dev/fuse, its only use of it); with
another pyfuse3 that has no such global, nothing is changed and the mount works as
before, slower per request. The view is only for a session served by one reader task:
with several, the lock is what keeps two tasks from reading /dev/fuse at once, so
callers must not use this with `max_tasks` > 1. A request that the fast path returns
for is not a trio checkpoint: cancelling the serving task takes effect at the next
scheduler pass (within SCHEDULER_EVERY_S + POLL_MS while requests keep coming).
"""
from __future__ import annotations

import math
import select
import time
import types
from contextlib import contextmanager
from typing import Iterator

import pyfuse3
import trio

from .init_flags import InitRelay

POLL_MS = 1                    # how long the fast path waits for the next request
SCHEDULER_EVERY_S = 0.002      # while requests keep coming, one scheduler pass this often
_next_turn = math.inf          # time.monotonic() of the earliest due turn announced (announce_turn)


def announce_turn(deadline: float) -> None:
    """A task about to sleep until `deadline` (trio's clock) for periodic work that must
    not wait behind requests (the mount's checkpoints) tells the reader: from then on it
    gives the scheduler a pass before taking the next request, and its poll for the next
    request waits no longer than that. Without it, a checkpoint came up to
    SCHEDULER_EVERY_S + POLL_MS late while requests kept coming."""
    global _next_turn
    _next_turn = min(_next_turn, time.monotonic() + deadline - trio.current_time())


class _NoLock:
    """An async context manager that does nothing (for one task alone, a lock orders nothing)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info) -> None:
        return None


class _RequestWait:
    """wait_readable for the one reader task: poll(2) first, trio when nothing comes.
    With an `InitRelay`, the session's first request (the INIT) and its reply pass
    through it (mount.init_flags)."""

    def __init__(self, relay: InitRelay | None = None) -> None:
        self._poll = select.poll()
        self._fd: int | None = None
        self._last_pass = -math.inf         # when trio's scheduler last ran for this task
        self._relay = relay

    async def wait_readable(self, fd) -> None:
        if self._relay is not None:
            if await self._relay.step(fd):  # libfuse reads the first request next
                return
            self._relay = None              # libfuse has answered it
        if fd != self._fd:
            if self._fd is not None:
                self._poll.unregister(self._fd)
            self._poll.register(fd, select.POLLIN)
            self._fd = fd
        global _next_turn
        now = time.monotonic()
        if now - self._last_pass < SCHEDULER_EVERY_S and now < _next_turn and \
                self._poll.poll(int(min(POLL_MS, (_next_turn - now) * 1000))):
            return                          # readable (or hung up: the read says which)
        if now >= _next_turn:               # its task runs in this pass
            _next_turn = math.inf
        await trio.lowlevel.wait_readable(fd)
        self._last_pass = time.monotonic()


def _trio_for_one_reader(relay: InitRelay | None) -> types.ModuleType:
    lowlevel = types.ModuleType("trio.lowlevel", "trio.lowlevel as seen by pyfuse3's single reader")
    lowlevel.__dict__.update({name: value for name, value in vars(trio.lowlevel).items()
                              if not name.startswith("__")})
    lowlevel.wait_readable = _RequestWait(relay).wait_readable
    view = types.ModuleType("trio", "trio as seen by pyfuse3's single reader task")
    view.__dict__.update({name: value for name, value in vars(trio).items()
                          if not name.startswith("__")})
    view.Lock = _NoLock
    view.lowlevel = lowlevel
    return view


@contextmanager
def single_reader_session(relay: InitRelay | None = None) -> Iterator[None]:
    """While inside, pyfuse3 serves its one reader task without a reader lock, and
    waits for requests that follow each other closely without a scheduler pass; with
    `relay`, its first request (the INIT) and the reply pass through `relay` (whose
    `granted` stays False with another pyfuse3)."""
    original = getattr(pyfuse3, "trio", None)
    if original is not trio:             # another pyfuse3: leave it alone
        yield
        return
    pyfuse3.trio = _trio_for_one_reader(relay)
    try:
        yield
    finally:
        pyfuse3.trio = original
        if relay is not None:
            relay.abandon()
