"""Keep freed buffers in the daemon's heap: glibc malloc tuned for FUSE request buffers.

Each WRITE request reaches the handler as a new bytes object of up to 1 MiB, and its
data is cut into 128 KiB blocks held until the next checkpoint seals them. With glibc's
defaults such buffers are mmap()ed, or the top of the heap is given back to the kernel
when they are freed, so the next request's buffer faults its pages in again: under a
sequential write that was about 40% of the daemon's CPU time (1.8-2.0 -> 1.0-1.2 ms of
daemon CPU per MiB written with the settings below, same minutes, loaded machine).

The group daemon (slsfs.daemon, which makes the mount's FileSystem) has bigger ones:
each checkpoint copies its pages into bytearrays of up to 8 MiB (checkpointer.capture's
READ_BATCH_BYTES), freed once the image is written. Above a 4 MiB threshold each was
mmap()ed in the tracer thread and munmap()ed after the write: ~1,900-2,400 page faults
per checkpoint of a Redis group at 10 Hz (~1,700 pages stored), 4-5 ms of system time
(glibc's own ceiling, 32 MiB, keeps them in the heap: ~20-140 faults).

`keep_freed_buffers()` makes allocations below MMAP_THRESHOLD come from the heap and
lets up to TRIM_THRESHOLD of free memory stay at its top. Simplifications: it is for the
whole process and for good (pyfuse3 serves one mount per process anyway); with a libc
other than glibc nothing changes.

The price is memory freed but kept: free space in the middle of the heap (between
objects still alive) is never given back by glibc on its own, and a thread's arena keeps
what that thread once allocated. A group daemon checkpointing a Redis group (100 MiB
dataset, 10 Hz) held 230 MB of malloc memory of which 98 MB was in use (malloc_stats; a
thread arena 67 MB with 0.9 MB in use). `give_back_free_memory_periodically()` calls
malloc_trim(0) every TRIM_INTERVAL_S in a worker thread, which returns the free pages
inside the heap and the arenas to the kernel: that daemon's resident size went 340 -> 220
MB, in ~20-45 ms (about 800 madvise calls); the buffers a checkpoint needs next fault in
once again (a few ms, once a minute).
"""
from __future__ import annotations

import ctypes
import logging

import trio

log = logging.getLogger("slsfs.mount")

MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
TRIM_INTERVAL_S = 60.0
_M_TRIM_THRESHOLD = -1              # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


def _glibc(name: str):
    """The C library's function `name`, or None where there is none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def keep_freed_buffers() -> bool:
    """Tune malloc as above; False (and nothing changed) where there is no glibc mallopt."""
    if (mallopt := _glibc("mallopt")) is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.info("malloc left as it is: mallopt refused the thresholds")
    return done


def give_back_free_memory() -> bool:
    """malloc_trim(0): the heap's and the arenas' free pages back to the kernel. False
    where there is no glibc malloc_trim (nothing done)."""
    if (trim := _glibc("malloc_trim")) is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


async def give_back_free_memory_periodically(interval: float = TRIM_INTERVAL_S) -> None:
    """give_back_free_memory every `interval` seconds, in a worker thread (the GIL let go:
    the event loop goes on meanwhile), for as long as the caller's nursery runs."""
    while True:
        await trio.sleep(interval)
        if not await trio.to_thread.run_sync(give_back_free_memory):
            return
