"""One scheduler pass less per FUSE request: pyfuse3's reader lock, dropped for one reader.

pyfuse3 (3.5) reads /dev/fuse in one or more reader tasks that take turns through a
`trio.Lock` taken around every wait for the next request. Acquiring a trio Lock always
passes through the scheduler once (a cancel-shielded checkpoint), even when no other
task wants it. The mount serves with a single reader task (filesystem.SESSION_TASKS), so
the lock has nothing to order: it only costs that pass, about a quarter of the daemon's
CPU time for a GETATTR on this machine (~55 -> ~35 us of user time per request).

`single_reader_session()` hands pyfuse3, while it serves, a view of the trio module in
which `Lock` is a no-op async context manager; every other name is trio's own. pyfuse3
creates its lock at the first wait of a session, so the view must be in place before
`pyfuse3.main` starts and for as long as it runs.

Simplifications: this relies on how pyfuse3 3.5 finds trio (the module global `trio`
of the pyfuse3 extension) and creates its reader lock (`trio.Lock()`, its only use of
Lock); with another pyfuse3 that has no such global, nothing is changed and the mount
works as before, one scheduler pass slower per request. The view is only for a session
served by one reader task: with several, the lock is what keeps two tasks from reading
/dev/fuse at once, so callers must not use this with `max_tasks` > 1.
"""
from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Iterator

import pyfuse3
import trio


class _NoLock:
    """An async context manager that does nothing (for one task alone, a lock orders nothing)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info) -> None:
        return None


def _trio_without_lock() -> types.ModuleType:
    view = types.ModuleType("trio", "trio as seen by pyfuse3's single reader task")
    view.__dict__.update({name: value for name, value in vars(trio).items()
                          if not name.startswith("__")})
    view.Lock = _NoLock
    return view


@contextmanager
def single_reader_session() -> Iterator[None]:
    """While inside, pyfuse3 serves its one reader task without a reader lock."""
    original = getattr(pyfuse3, "trio", None)
    if original is not trio:             # another pyfuse3: leave it alone
        yield
        return
    pyfuse3.trio = _trio_without_lock()
    try:
        yield
    finally:
        pyfuse3.trio = original
