"""The checkpointer's own memory in a frozen process, mapped under the process's limits.

What: `map_rwx(inj, pid, length)` maps `length` bytes of private, anonymous, read-write-
execute memory in `pid` by an injected mmap (`inj`: an injector into one of its threads,
signals blocked) and returns its address, or None if the process has no room for it
under an address-space limit we may not lift. When the mmap fails with ENOMEM under the
process's address-space limit (RLIMIT_AS), the limit is lifted from outside (prlimit(2):
to unlimited where we may, which takes CAP_SYS_RESOURCE when the hard limit is not
already unlimited; else the soft limit up to the hard one) for that mmap alone, and put
back at once. The kernel checks the limit when a mapping is made, so the process keeps
its own limit, and our mapping is counted in its address space until we unmap it.
Why: batch.py and injection_page.py need a page for the code of their injected calls; a
process run under a tight RLIMIT_AS (`ulimit -v`, stress-ng --rlimit) could not be
checkpointed at all.

Simplifications: if the checkpointer is killed between the lift and its undoing, the
process keeps the lifted limit. A limit we cannot lift (soft = hard, without
CAP_SYS_RESOURCE: stress-ng --rlimit) gives None: the callers then inject their calls one
by one through the thread's stack (batch.py), which needs no mapping.
"""
from __future__ import annotations

import errno
import os
import resource

from . import kernel
from .errors import CheckpointError
from .inject import Injector

PROT_RWX, MAP_PRIVATE_ANONYMOUS = 7, 0x22
UNLIMITED = resource.RLIM_INFINITY


def map_rwx(inj: Injector, pid: int, length: int) -> int | None:
    """The address of `length` new bytes of RWX memory in `pid`; None: no room under a
    limit we may not lift (see the module)."""
    result = _mmap(inj, length)
    if result == -errno.ENOMEM:
        limits = resource.prlimit(pid, resource.RLIMIT_AS)
        if limits[0] != UNLIMITED:
            if not _lift(pid, limits):
                return None
            try:
                result = _mmap(inj, length)
            finally:
                resource.prlimit(pid, resource.RLIMIT_AS, limits)
    if -4096 < result < 0:
        raise CheckpointError(f"mmap (injection page, {length} bytes) failed in task {inj.tid}: "
                              f"{os.strerror(-result)}")
    return result


def _mmap(inj: Injector, length: int) -> int:
    return inj.call(kernel.NR["mmap"], 0, length, PROT_RWX, MAP_PRIVATE_ANONYMOUS, -1, 0)


def _lift(pid: int, limits: tuple[int, int]) -> bool:
    """Raise `pid`'s RLIMIT_AS (now `limits`) as far as we may; False if we may not at all."""
    soft, hard = limits
    for lifted in ((UNLIMITED, UNLIMITED), (hard, hard)):
        if lifted[0] == soft:
            continue
        try:
            resource.prlimit(pid, resource.RLIMIT_AS, lifted)
            return True
        except (PermissionError, ValueError):
            continue
    return False
