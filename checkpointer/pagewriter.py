"""Write restored pages into a process from a second thread.

What: `PageWriter(tid)` takes runs (an address and the consecutive pages there) with
`write()` and writes each from its own thread; `close()` waits until every run is in and
raises the first error. A run (or the part of it) inside the `copy_ranges` of a
userfaultfd registered over the process's fresh private anonymous memory
(`PageWriter(tid, uffd, ranges)`, see `register_fresh_memory`) goes in with one
UFFDIO_COPY per run: the kernel allocates and fills the pages directly, about twice as
fast as a write through /proc/TID/mem, which faults each page in through the remote-access
path one at a time. The rest (file mappings, stacks, shared memory) is written with one
pwritev per run into /proc/TID/mem. `close()` closes the userfaultfd, which hands the
ranges back to ordinary page faults (pages never written are zero, as before).
Why: restore time is reading pages from the store (Python, holds the GIL) plus writing
them into the new process (both the ioctl and os.pwritev let go of the GIL): with a
second thread the two overlap. The thread leaves the CPU the restorer pinned itself to
(it inherited that pinning), so the two run side by side on two CPUs.

Simplifications: at most QUEUED_RUNS runs (of up to 1 MiB: image.RUN_PAGES) wait in memory; the thread
touches no ptrace state (only the mem file and the userfaultfd), so ptrace's one-thread
rule still holds. While the userfaultfd is registered nothing may touch those ranges
(an injected syscall that did would wait for a page nobody sends): the builder's
injected calls use its helper area only. Without userfaultfd (refused by the kernel)
everything goes through /proc/TID/mem.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import os
import queue
import threading

from .errors import CheckpointError, ProcessGone
from .inject import Injector
from .kernel import PAGE_SIZE
from .uffd import UFFD_API, UFFDIO_API, UFFDIO_REGISTER, iowr, take_from
from .uffd import ioctl as uffd_ioctl

QUEUED_RUNS = 32
UFFDIO_COPY = iowr(0xAA, 0x03, 40)
UFFDIO_REGISTER_MODE_MISSING = 1
MAX_STALLS = 100  # UFFDIO_COPY answers EAGAIN at most this often per run


def register_fresh_memory(inj: Injector, ranges: list[tuple[int, int]]) -> int | None:
    """A userfaultfd of the stopped process (driven by `inj`) with `ranges` (fresh private
    anonymous memory, nothing in it yet) registered for UFFDIO_COPY; None if the kernel
    refuses (the pages are then written through /proc/PID/mem)."""
    if not ranges:
        return None
    try:
        uffd = take_from(inj, inj.tid, "restore's page copy")
    except (CheckpointError, OSError):  # no userfaultfd here (a seccomp filter, pidfd_getfd refused)
        return None
    try:
        uffd_ioctl(uffd, UFFDIO_API, (ctypes.c_uint64 * 3)(UFFD_API, 0, 0), "UFFDIO_API (restore)")
        for start, end in ranges:
            reg = (ctypes.c_uint64 * 4)(start, end - start, UFFDIO_REGISTER_MODE_MISSING, 0)
            uffd_ioctl(uffd, UFFDIO_REGISTER, reg, f"UFFDIO_REGISTER of {start:#x} (restore)")
    except CheckpointError:
        os.close(uffd)  # the kernel unregisters what was registered
        return None
    return uffd


class PageWriter:
    def __init__(self, tid: int, uffd: int | None = None, copy_ranges: list[tuple[int, int]] = ()):
        """`uffd` (owned from here on: closed by close()) has `copy_ranges` registered."""
        self.tid = tid
        self._uffd = uffd
        self._ranges = sorted(copy_ranges) if uffd is not None else []
        try:
            self._mem = os.open(f"/proc/{tid}/mem", os.O_RDWR)
        except FileNotFoundError as exc:
            self._close_uffd()
            raise ProcessGone(tid) from exc
        self._queue: queue.Queue[tuple[int, list[bytes]] | None] = queue.Queue(QUEUED_RUNS)
        self._error: BaseException | None = None
        self.copied_pages = 0  # pages that went in by UFFDIO_COPY (the rest: through the mem file)
        self._thread = threading.Thread(target=self._run, name=f"sls-pages-{tid}", daemon=True)
        self._thread.start()

    def write(self, addr: int, pages: list[bytes]) -> None:
        """Queue a run: whole pages from addr on (blocks while QUEUED_RUNS wait)."""
        if self._error is not None:
            self.close()
        self._queue.put((addr, pages))

    def _run(self) -> None:
        try:  # not on the CPU the restorer pinned itself to (pinning.py): on any, beside it
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        except OSError:
            pass  # a cpuset that allows none of them: stay where we are
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain after a failure; close() reports it
            addr, pages = item
            try:
                for start, part, copied in self._pieces(addr, pages) if self._ranges else [(addr, pages, False)]:
                    (self._copy_run if copied else self._write_run)(start, part)
            except OSError as exc:
                self._error = CheckpointError(f"cannot write memory at {addr:#x} into task {self.tid}: "
                                              f"{exc.strerror}")
            except CheckpointError as exc:
                self._error = exc

    def _pieces(self, addr: int, pages: list[bytes]) -> list[tuple[int, list[bytes], bool]]:
        """The run cut where it enters or leaves a copy range: (address, pages, copied?)."""
        end = addr + sum(len(page) for page in pages)
        at = bisect.bisect_right(self._ranges, (addr, 1 << 64)) - 1
        inside = at >= 0 and addr < self._ranges[at][1]
        limit = self._ranges[at][1] if inside else (self._ranges[at + 1][0] if at + 1 < len(self._ranges)
                                                    else 1 << 64)
        if end <= limit:  # the common case: the whole run on one side
            return [(addr, pages, inside)]
        single = [memoryview(p)[i:i + PAGE_SIZE] for p in pages for i in range(0, len(p), PAGE_SIZE)]
        cut = (limit - addr) // PAGE_SIZE
        return [(addr, single[:cut], inside)] + self._pieces(limit, single[cut:])

    def _copy_run(self, addr: int, pages: list[bytes]) -> None:
        data = b"".join(pages)  # one page or a joined run: the object itself, no copy
        base = ctypes.cast(data, ctypes.c_void_p).value
        done, stalls = 0, 0
        while done < len(data):
            arg = (ctypes.c_uint64 * 5)(addr + done, base + done, len(data) - done, 0, 0)
            try:
                uffd_ioctl(self._uffd, UFFDIO_COPY, arg, f"UFFDIO_COPY at {addr + done:#x}")
            except CheckpointError as exc:
                if exc.errno == errno.ESRCH:
                    raise ProcessGone(self.tid, "its memory went away while being written") from None
                stalls += 1
                if exc.errno != errno.EAGAIN or stalls > MAX_STALLS:  # EAGAIN: the layout changed; again
                    raise
            copied = arg[4]
            done += copied if 0 < copied < 1 << 63 else 0
        self.copied_pages += len(data) // PAGE_SIZE

    def _write_run(self, addr: int, pages: list[bytes]) -> None:
        buffers = list(pages)
        while buffers:
            done = os.pwritev(self._mem, buffers, addr)
            if done == 0:  # the task's memory is gone: it is exiting (killed)
                raise ProcessGone(self.tid, "its memory went away while being written")
            addr += done
            while buffers and done >= len(buffers[0]):
                done -= len(buffers[0])
                buffers.pop(0)
            if done:
                buffers[0] = memoryview(buffers[0])[done:]

    def _close_uffd(self) -> None:
        if self._uffd is not None:
            os.close(self._uffd)  # the ranges go back to ordinary faults
            self._uffd = None

    def close(self) -> None:
        """Wait for every queued run; raise the first error (once)."""
        if self._mem >= 0:
            self._queue.put(None)
            self._thread.join()
            os.close(self._mem)
            self._mem = -1
            self._close_uffd()
        error, self._error = self._error, None
        if error is not None:
            raise error
