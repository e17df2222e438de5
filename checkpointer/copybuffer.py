"""Memory for the pages a stop copies, made ready before the freeze.

What: a `CopyBuffer` hands out slices of one bytearray (`take(size)`); `prepare()`, called
before a freeze while the processes run, replaces it with a new one of the size the most
any of the last RECENT_STOPS stops asked for (plus a margin), its pages touched at once.
Slices already handed out keep their old buffer alive until their pages are stored: a
buffer is never reused, only dropped. A stop that asks for more than is left gets fresh
anonymous memory (mmap), not zeroed here: its pages are faulted in by the copy that writes
them, on the other CPU (copier.py).
Why: the pages written again after the pre-copy are read inside the stop (snapshot.PageCopy);
into a fresh bytearray the kernel first had to fault in and zero every page of it: 0.3-0.8 ms
of a 10 MiB bench target's stop for its 258 pages (1 MiB), nearly half of that copy
(bench/checkpoint.py, load 1-2, 2026-11-30). Sized by the last stop alone, 9 of 29 Redis
stops under redis-benchmark asked for more (3-6 MiB, the amount varies from stop to stop)
and made that bytearray in the tracer: 0.8-4.7 ms each (load 12, 2026-12-01).

Simplifications: at most MAX_BYTES is prepared (a stop copying more forks a snapshot instead).
"""
from __future__ import annotations

import collections
import mmap

MARGIN_BYTES = 64 << 10
MAX_BYTES = 32 << 20
RECENT_STOPS = 8


class CopyBuffer:
    """Slices of one prepared bytearray, then fresh ones once it is used up."""

    def __init__(self) -> None:
        self._view = memoryview(bytearray(0))
        self._at = 0
        self._asked = 0     # bytes asked for since the last prepare()
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_STOPS)   # ... by the stops before

    def prepare(self) -> None:
        """Before a freeze: a new buffer as large as the most a recent stop asked for (with
        a margin of a quarter and MARGIN_BYTES), every page of it touched now."""
        if self._asked:
            self._recent.append(self._asked)
        most = max(self._recent, default=0)
        size = min(most + most // 4 + MARGIN_BYTES, MAX_BYTES) if most else 0
        if size > len(self._view) - self._at:
            self._view = memoryview(bytearray(size))   # bytearray(n) writes its zeros: the pages are in
            self._at = 0
        self._asked = 0

    def take(self, size: int) -> memoryview:
        """A writable buffer of `size` bytes, from the prepared one while it lasts, else
        fresh zero pages that the first write faults in."""
        self._asked += size
        if size > len(self._view) - self._at:
            return memoryview(mmap.mmap(-1, size))
        part = self._view[self._at:self._at + size]
        self._at += size
        return part
