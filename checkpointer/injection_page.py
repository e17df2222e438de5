"""One injection page per tracked process, kept mapped from one checkpoint to the next.

What: `take(pid, inj, size)` gives the address of a private RWX mapping in the frozen
process `pid` (`inj`: an injector into its main thread, signals blocked) with at least
`size` bytes for a batch of injected calls (batch.py). It is the mapping made at an
earlier checkpoint while that is still ours; otherwise a new one: an injected mmap, then
madvise(MADV_DONTFORK) so that no child of the process inherits it (a mapping of ours
too small for the batch is unmapped first). Its last COOKIE_SIZE bytes hold a random
cookie, by which procfs.maps recognises it and leaves it out of every view of the
process's memory (the image, write tracking, pre-copy, fork snapshots): it is the
checkpointer's, not the process's, and never restored. `release(pid)` unmaps it
(freezing the process for a moment), for a process the checkpointer stops tracking
while it runs on.
Why: mapping and unmapping the blob's memory at every checkpoint were two injected
system calls (eight ptrace round trips) in every stop of every process.

Simplifications: a process that unmaps the page or maps over it (it cannot know the
page is there) loses nothing: the page is no longer recognised (exact extent, rwxp,
anonymous, cookie) and a new one is made. A process whose seccomp filter refuses madvise
keeps none (its calls get a mapping per checkpoint, as before). If the checkpointer is
killed, the page stays in the process, as its write-tracking userfaultfd does. x86-64 only.
"""
from __future__ import annotations

import os

from . import kernel, procfs
from .errors import CheckpointError, ProcessGone
from .freeze import ALL_SIGNALS, freeze, stack_scratch, syscall_insn_of
from .inject import Injector
from .injectmap import map_rwx

COOKIE_SIZE = 16
MIN_PAGES = 2            # room for the calls of a process with many handlers and threads
MADV_DONTFORK, NR_MADVISE = 10, 28
_REFUSED: set[int] = set()   # pids whose madvise failed (seccomp): they keep no page


def take(pid: int, inj: Injector, size: int) -> int | None:
    """The address of our mapping in `pid`, with `size` bytes free before the cookie; None
    if the process may not keep one (a seccomp filter that refuses madvise; no room under
    its address-space limit, this time): the caller does without, as for a process not
    tracked."""
    if pid in _REFUSED:
        return None
    procfs.maps(pid)                    # checks the mapping made earlier (once per freeze window)
    own = procfs.owned(pid)
    if own is not None and own[1] - own[0] - COOKIE_SIZE >= size:
        return own[0]
    if own is not None:
        _unmap(inj, pid, *own)
    length = max(MIN_PAGES * kernel.PAGE_SIZE, -(-(size + COOKIE_SIZE) // kernel.PAGE_SIZE) * kernel.PAGE_SIZE)
    base = map_rwx(inj, pid, length)
    if base is None:
        return None                     # no room under its address-space limit: not kept, for now
    try:
        if inj.call(NR_MADVISE, base, length, MADV_DONTFORK) < 0:
            inj.check(kernel.NR["munmap"], base, length, what="munmap (injection page)")
            _REFUSED.add(pid)
            return None
        cookie = os.urandom(COOKIE_SIZE)
        inj.write(base + length - COOKIE_SIZE, cookie)
    except BaseException:
        inj.call(kernel.NR["munmap"], base, length)
        raise
    procfs.own_mapping(pid, base, base + length, cookie)
    return base


def _unmap(inj: Injector, pid: int, start: int, end: int) -> None:
    procfs.disown(pid)
    inj.check(kernel.NR["munmap"], start, end - start, what="munmap (injection page)")


def release(pid: int) -> None:
    """Unmap our mapping from `pid`, which runs (it is frozen and thawed again here); a
    process that has exited, or no longer has the mapping, is simply forgotten."""
    if procfs.owned(pid) is None:
        return
    try:
        with freeze([pid]) as frozen:
            procfs.maps(pid)            # checked again now that it cannot change
            own = procfs.owned(pid)
            if own is None:
                return
            main = frozen.processes[pid].main
            kernel.set_sigmask(main.tid, ALL_SIGNALS)
            main.touched = True
            inj = Injector(main.tid, syscall_insn_of(pid), *stack_scratch(main.regs), held=main.caught)
            try:
                _unmap(inj, pid, *own)
            finally:
                inj.close()
    except (ProcessGone, CheckpointError, OSError):
        pass                            # gone or going: nothing of ours is left to see
    finally:
        procfs.disown(pid)
