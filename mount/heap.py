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
whole process and for good (pyfuse3 serves one mount per process anyway); the daemon's
resident size may stay up to TRIM_THRESHOLD above what it uses; with a libc other than
glibc nothing changes.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("slsfs.mount")

MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
_M_TRIM_THRESHOLD = -1              # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_buffers() -> bool:
    """Tune malloc as above; False (and nothing changed) where there is no glibc mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.info("malloc left as it is: mallopt refused the thresholds")
    return done
