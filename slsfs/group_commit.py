"""Group commit: the daemon's commits made durable together, off its checkpoint lock.

What: `GroupCommit.durable(commit_id)` returns once the store's commit `commit_id` (and
every one before it) is on disk. One barrier (a write of what the store buffered and ONE
fdatasync, in a worker thread: mount.FileSystem.barrier) runs at a time and covers every
commit made before it began; a commit made while it runs waits for the next one, which
then covers all the commits made meanwhile: at 100 checkpoints a second a slow fdatasync
makes several checkpoints durable at once instead of holding back the next freeze.
Why: a group checkpoint used to wait for its own fdatasync with the daemon's checkpoint
lock held, so the next checkpoint (its freeze, its seal) waited for the previous one's
disk flush; now the lock covers the capture, the writes and the commit record only, and
a periodic checkpoint's durability is awaited in the background (slsfs.daemon).
The order on disk is unchanged: the image, the files commit, the group record and the
commit record are appended to the store in that order, and a barrier makes a prefix of
the store durable, so a crash finds a commit with everything it names or the one before.
A failed barrier fails every waiter whose commit it covered (none is reported durable);
later waiters try a barrier of their own. How far the commits may run ahead of the disk
is bounded (`within`).
"""
from __future__ import annotations

from typing import Awaitable, Callable

import trio

from objectstore import Store


class _Barrier:
    """One barrier in flight: the newest commit it covers, and how it ended."""

    def __init__(self, covers: int) -> None:
        self.covers = covers
        self.done = trio.Event()
        self.error: Exception | None = None


class GroupCommit:
    """Durability of `store`'s commits through `barrier()` (an async call that makes every
    commit made before it began durable and returns the newest durable id), one at a time,
    shared by every waiter it covers. Trio thread only."""

    def __init__(self, store: Store, barrier: Callable[[], Awaitable[int]]) -> None:
        self._store = store
        self._barrier = barrier
        self._running: _Barrier | None = None
        self.barriers = 0            # barriers run so far (what `sls ps` and the benchmark may show)

    async def durable(self, commit_id: int) -> int:
        """Wait until commit `commit_id` is durable; the newest durable id. Raises what the
        barrier covering it raised (StoreError: a full disk, an I/O error)."""
        while self._store.durable_id < commit_id:
            running = self._running
            if running is not None:           # one is in flight: it covers us if it began after our commit
                await running.done.wait()
                if running.error is not None and running.covers >= commit_id:
                    raise running.error
                continue
            head = self._store.head
            self._running = running = _Barrier(head.id if head else 0)
            self.barriers += 1
            try:
                await self._barrier()
            except Exception as exc:          # (a cancelled one is no failure: the others try again)
                running.error = exc
                raise
            finally:
                self._running = None
                running.done.set()
        return self._store.durable_id

    async def within(self, commits: int) -> None:
        """Wait until at most `commits` commits are not yet durable: what a periodic
        checkpoint waits for before its freeze, so that a disk slower than the checkpoints
        holds them back (as waiting for each one's fdatasync did) instead of letting
        unsynced pages pile up in the page cache until the kernel throttles the daemon's
        writes, in the thread that serves the mount."""
        head = self._store.head
        if head is not None and head.id - self._store.durable_id > commits:
            await self.durable(head.id - commits)
