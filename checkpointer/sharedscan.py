"""The stop's scan of a large process's written pages, shared with the other CPU.

What: `SharedScan(pid, pieces, scan, cpus)`, made inside a freeze window, has the copier's
worker (copier.py, on `cpus`) call `scan(pagemap fd, start, end, regions)` on the address
pieces in order, each piece taken by whichever of the two threads is free; `result()`,
called by the tracer when it needs the pages, scans the pieces the worker has not taken
yet itself, waits for the one the worker is on, and gives every piece's ranges in address
order. It opens a /proc/PID/pagemap descriptor of its own, closed only once neither thread
scans any more (a descriptor number the freeze window closed and the kernel gave to
another file would have the worker write-protect pages of another process).
Why: PAGEMAP_SCAN walks every page table entry of the memory it is given (~0.45 ms per
GiB on this VM: 2 GiB of memory is 4 MiB of page tables, as large as the L2 cache),
however few pages were written: the page tables are the only place that says where a
process wrote. The walk cannot be left out of the stop, as a page written after the
pre-copy's scan may be any page, but it can run on the other CPU while the tracer reads
the process's status and maps, and on both CPUs once the tracer needs it.

Simplifications: `scan` must be safe to call from two threads at once on disjoint pieces
(PAGEMAP_SCAN is: each walk takes the memory map's lock for reading and each page
table's own lock); each thread brings its own output buffer.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable

from . import copier, procfs
from .errors import CheckpointError, ProcessGone

Scan = Callable[[int, int, int, ctypes.Array], procfs.PageRanges]   # (pagemap fd, start, end, regions)


class SharedScan:
    """The written pages of `pieces` ((start, end), address order) of process `pid`, found
    by `scan` on the worker and the tracer (see the module docstring)."""

    def __init__(self, pid: int, pieces: list[tuple[int, int]], scan: Scan, cpus: set[int]) -> None:
        try:
            self._fd: int | None = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessGone(pid) from exc
        self._closing = threading.Lock()    # result() and cancel() (Incremental.reset) may race
        self._pieces, self._scan = pieces, scan
        self._left = list(reversed(range(len(pieces))))    # popped from the end: address order
        self._found: list[procfs.PageRanges] = [[] for _ in pieces]
        self._job = copier.submit(self._work, cpus, hurried=True)

    def _work(self) -> None:
        """Scan pieces until none is left (list.pop is atomic: each piece is taken once)."""
        regions = procfs.scan_buffer()
        while True:
            try:
                at = self._left.pop()
            except IndexError:
                return
            start, end = self._pieces[at]
            self._found[at] = self._scan(self._fd, start, end, regions)

    def result(self) -> procfs.PageRanges:
        """Every piece's written pages, address order (an error of either thread raised)."""
        try:
            self._work()
        finally:
            self._left.clear()          # (after an error here: the worker takes no more)
            try:
                self._job.result()
            finally:
                self._close()
        return [span for found in self._found for span in found]

    def cancel(self) -> None:
        """Stop after the pieces being scanned (an error: nothing is asked of the scan any more)."""
        self._left.clear()
        try:
            self._job.result()
        except (CheckpointError, OSError):   # the capture that asked failed already: its error is told
            pass
        finally:
            self._close()

    def _close(self) -> None:
        with self._closing:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def pieces(spans: list[tuple[int, int, list[procfs.Vma]]], size: int) -> list[tuple[int, int]]:
    """[start, end) pieces of `spans` ((start, end, the tracked mappings there), address
    order) holding about `size` bytes of tracked mappings each; a mapping larger than
    that is cut (`size` a multiple of the page size)."""
    found: list[tuple[int, int]] = []
    for start, end, vmas in spans:
        if not vmas:
            continue
        at, amount = start, 0
        for vma in vmas:
            pos = max(vma.start, at)
            while amount + vma.end - pos > size:
                cut = pos + size - amount
                found.append((at, cut))
                at, pos, amount = cut, cut, 0
            amount += vma.end - pos
        if at < end:
            found.append((at, end))
    return found
