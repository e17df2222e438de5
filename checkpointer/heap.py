"""Give back to the kernel the memory a large capture used and freed.

What: `after_capture(stored_bytes)`, called once a capture's pages are stored, asks glibc
(malloc_trim(0)) to return the free memory of every malloc arena when the capture stored
at least TRIM_AFTER_BYTES of pages; a smaller one (an incremental checkpoint of a few
MiB) costs nothing here.
Why: a full checkpoint's pages pass through buffers malloc takes from its arenas (read
from a fork snapshot in the copier's thread, compressed in the store's) and frees again,
and glibc keeps freed memory resident unless it lies at the very top of an arena.
Measured (2026-12-01, load 10-11): a daemon running a 1 GiB group held 2.1 GB after its
first checkpoints (thirty-odd thread arenas of 56 MiB), bench/checkpoint.py's process
2.35 GB after capturing 2 GiB. A process holding that pays at each fork: the page server
of a lazy restore is a fork of the restorer (2.3 GB: 19-26 ms of CPU for the fork alone,
then as much for its own fork of the page guard; 300 MB once trimmed: 2-3 ms).
The trim itself: ~57 ms of CPU to give back 2 GB, in the thread that finished the
capture (the daemon's, after the thaw: the application runs meanwhile).

Simplifications: glibc only (elsewhere a no-op); the threshold counts the pages stored,
not the memory malloc actually kept.
"""
from __future__ import annotations

import ctypes

TRIM_AFTER_BYTES = 64 << 20

_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)   # (not find_library: it runs ldconfig, ~0.1 s)


def after_capture(stored_bytes: int) -> None:
    """A capture stored `stored_bytes` of pages: give the freed memory back if that was much."""
    if _malloc_trim is not None and stored_bytes >= TRIM_AFTER_BYTES:
        _malloc_trim(0)
