"""Memory for the pages a checkpoint copies, made ready before the freeze and reused.

What: a `CopyBuffer` hands out slices of one anonymous mapping, its arena (`take(size)`);
`prepare()`, called before a freeze (or before a pre-copy) while the processes run, makes
sure the arena covers the most any of the last RECENT_STOPS copies asked for (plus a
margin), every page of it faulted in. The arena is used again from its start once no
slice of it is held any more (`_held`: the mapping refuses a resize while a view of it is
exported): pages of one checkpoint still waiting to be stored after the thaw, held by the
image writer or the daemon, are never overwritten; while they are held the next slices come
from the rest of the arena, or from a new one (the old arena then lives as long as its
slices). A copy that asks for more than is left gets fresh anonymous memory (mmap), not
faulted in here: its pages are faulted in by the copy that writes them.
Why: the pages written again after the pre-copy are read inside the stop (snapshot.PageCopy);
into a fresh bytearray the kernel first had to fault in and zero every page of it: 0.3-0.8 ms
of a 10 MiB bench target's stop for its 258 pages (1 MiB), nearly half of that copy
(bench/checkpoint.py, load 1-2, 2026-11-30). Sized by the last stop alone, 9 of 29 Redis
stops under redis-benchmark asked for more (3-6 MiB, the amount varies from stop to stop)
and made that bytearray in the tracer: 0.8-4.7 ms each (load 12, 2026-12-01). The pre-copy
(Incremental.precopy, ~2,000 pages of a Redis under redis-benchmark) read into a new
bytearray each time: its zeroing and page faults cost the tracer thread more than the copy
itself, before every freeze; an arena used again has its pages in already.

Simplifications: at most MAX_BYTES is prepared (a stop copying more forks a snapshot instead).
"""
from __future__ import annotations

import collections
import mmap

MARGIN_BYTES = 64 << 10
MAX_BYTES = 32 << 20
RECENT_STOPS = 8
MADV_POPULATE_WRITE = 23     # Linux 5.14: fault every page in, writable (not in Python 3.11's mmap)


class CopyBuffer:
    """Slices of one prepared arena, used again once none is held, then fresh memory once
    it is used up."""

    def __init__(self) -> None:
        self._arena: mmap.mmap | None = None
        self._at = 0
        self._asked = 0     # bytes asked for since the last prepare()
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_STOPS)   # ... by the copies before

    def prepare(self) -> None:
        """Before a freeze: an arena that holds the most a recent copy asked for, every
        page of it in memory: the one there was, from its start if no slice of it is held
        any more and it holds that much; else what is left of it, if that holds as much with
        a margin of a quarter and MARGIN_BYTES; else a new one of that size."""
        if self._asked:
            self._recent.append(self._asked)
        self._asked = 0
        most = max(self._recent, default=0)
        size = min(most + most // 4 + MARGIN_BYTES, MAX_BYTES) if most else 0
        arena = self._arena
        if arena is not None and not _held(arena) and most <= len(arena):
            self._at = 0                        # used again: its pages are in already
        elif arena is None or size > len(arena) - self._at:
            self._arena, self._at = (_populated(size) if size else None), 0

    def take(self, size: int) -> memoryview:
        """A writable buffer of `size` bytes, from the prepared arena while it lasts, else
        fresh zero pages that the first write faults in."""
        self._asked += size
        if self._arena is None or size > len(self._arena) - self._at:
            return memoryview(mmap.mmap(-1, size))
        part = memoryview(self._arena)[self._at:self._at + size]   # (no view of the arena kept here)
        self._at += size
        return part


def _held(arena: mmap.mmap) -> bool:
    """Whether a view of the arena is still alive somewhere (a slice handed out, not yet
    let go): the mapping then refuses to be resized, even to its own size."""
    try:
        arena.resize(len(arena))
    except BufferError:
        return True
    return False


def _populated(size: int) -> mmap.mmap:
    """Anonymous memory of `size` bytes with every page faulted in (written: not the shared
    zero page)."""
    arena = mmap.mmap(-1, size)
    try:
        arena.madvise(MADV_POPULATE_WRITE)
    except OSError:                       # a kernel before 5.14: touch each page
        for at in range(0, size, mmap.PAGESIZE):
            arena[at] = 0
    return arena
