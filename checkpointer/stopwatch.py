"""Where the stop time of a checkpoint goes: named phases, timed when someone asks.

What: `with recording() as times:` collects, into the dict `times` (phase name ->
milliseconds, summed over repeats), every `with phase("name"):` block that runs inside
it, in this thread. Outside a recording `phase()` costs one attribute lookup.
Why: the benchmark (bench/checkpoint.py) reports the breakdown of the stop, so the
next engineer cuts the biggest part rather than guessing.

Simplifications: phases may nest (the outer one includes the inner ones); one recording
per thread at a time.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

_local = threading.local()


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect the phases timed inside this block (this thread only)."""
    times: dict[str, float] = {}
    outer = getattr(_local, "times", None)
    _local.times = times
    try:
        yield times
    finally:
        _local.times = outer


def add(name: str, ms: float) -> None:
    """Count `ms` milliseconds as `name` if a recording is active (a span not shaped like a block)."""
    times = getattr(_local, "times", None)
    if times is not None:
        times[name] = times.get(name, 0.0) + ms


class phase:
    """`with phase("name"):` times the block as `name` if a recording is active. A class,
    not a generator context manager: ~30 of them run in every stop, and a generator-based
    one cost ~7 us each there, this ~4 (load 10; half that when no recording is active)."""

    __slots__ = ("name", "times", "start")

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.times = getattr(_local, "times", None)
        if self.times is not None:
            self.start = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        if self.times is not None:
            self.times[self.name] = self.times.get(self.name, 0.0) + (time.perf_counter() - self.start) * 1000
