"""The stop's scan of a large process's written pages, shared with the other CPU.

What: `SharedScan(pid, pieces, scan, native).start(cpus)`, started inside a freeze window,
has the copier's worker (copier.py, on `cpus`) call `scan(pagemap fd, start, end, regions)`
on the address pieces in order, each piece taken by whichever of the two threads is free;
`result()`, called by the tracer when it needs the pages, scans the pieces the worker has
not taken yet itself, waits for the one the worker is on, and gives every piece's ranges in
address order. It opens a /proc/PID/pagemap descriptor of its own, closed only once neither
thread scans any more (a descriptor number the freeze window closed and the kernel gave to
another file would have the worker write-protect pages of another process).
Why: PAGEMAP_SCAN walks every page table entry of the memory it is given (~0.45 ms per
GiB on this VM: 2 GiB of memory is 4 MiB of page tables, as large as the L2 cache),
however few pages were written: the page tables are the only place that says where a
process wrote. The walk cannot be left out of the stop, as a page written after the
pre-copy's scan may be any page, but it can run on the other CPU while the tracer reads
the process's status and maps, and on both CPUs once the tracer needs it.

Given the scan's PAGEMAP_SCAN mask and flags (`native`), the pieces are scanned by the
native worker (nativeworker.py: one ioctl per piece, each claimed by the worker or by the
tracer's `result()`, neither holding Python's lock); otherwise (and when that worker is
busy or cannot be had) by the copier's Python worker (copier.py), which needs Python's lock
to begin each piece and to end it, while the tracer waits for that lock after each of its
own system calls: a 2 GiB stop (8 pieces) waited 0.74 ms for its scan (load 1.4). Through
the native worker that stop took 2.65 ms instead of 2.88 (medians of 3 x 40 stops in
turns in one process, lower in 103 of 120 pairs, load 1.8-3).

Simplifications: `scan` must be safe to call from two threads at once on disjoint pieces
(PAGEMAP_SCAN is: each walk takes the memory map's lock for reading and each page
table's own lock); each thread brings its own output buffer.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable

from . import copier, nativeworker, procfs
from .errors import CheckpointError, ProcessGone

NR_IOCTL = 16
Scan = Callable[[int, int, int, ctypes.Array], procfs.PageRanges]   # (pagemap fd, start, end, regions)


class SharedScan:
    """The written pages of `pieces` ((start, end), address order) of process `pid`, found
    by `scan` on the worker and the tracer (see the module docstring) once `start`ed;
    `native`: (mask, flags), `scan` as PAGEMAP_SCAN's own, for the native worker. Made
    before the freeze when the pieces are known then (Incremental.precopy: DirtyTracker.plan_scan),
    so that the stop pays only `start` (opening the pagemap and preparing each piece's
    call and output took 0.09 ms of a 2 GiB stop, 8 pieces: its early_scan_start phase
    0.17 -> 0.075 ms, medians of 6 runs); a scan never started is let go by `cancel`."""

    def __init__(self, pid: int, pieces: list[tuple[int, int]], scan: Scan,
                 native: tuple[int, int] | None = None) -> None:
        try:
            self._fd: int | None = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessGone(pid) from exc
        self._pid = pid
        self._closing = threading.Lock()    # result() and cancel() (Incremental.reset) may race
        self._pieces, self._scan = pieces, scan
        self._left = list(reversed(range(len(pieces))))    # popped from the end: address order
        self._found: list[procfs.PageRanges] = [[] for _ in pieces]
        self._native: _NativePieces | None = _NativePieces(self._fd, pieces, native) if native else None
        self._job: copier.Job | None = None

    def start(self, cpus: set[int]) -> "SharedScan":
        """Begin the scan on `cpus` (by the native worker if it takes it); this scan."""
        if self._native is None or not self._native.submit(cpus):
            self._native = None
            self._job = copier.submit(self._work, cpus, hurried=True)
        return self

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
            if self._native is not None:
                self._found = self._native.result(self._pid, self._scan)
            else:
                self._work()
        finally:
            self._left.clear()          # (after an error here: the worker takes no more)
            try:
                self._wait()
            finally:
                self._close()
        return [span for found in self._found for span in found]

    def cancel(self) -> None:
        """Stop after the pieces being scanned (the native worker's: once all are made, those
        not begun by this thread); an error: nothing is asked of the scan any more."""
        self._left.clear()
        try:
            self._wait()
        except (CheckpointError, OSError):   # the capture that asked failed already: its error is told
            pass
        finally:
            self._close()

    def _wait(self) -> None:
        """Until neither thread scans any more (the native worker's pieces: all made)."""
        if self._native is not None:
            self._native.wait()
        elif self._job is not None:
            self._job.result()

    def _close(self) -> None:
        with self._closing:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class _NativePieces:
    """One PAGEMAP_SCAN per piece, for the native worker, each with its own output."""

    def __init__(self, fd: int, pieces: list[tuple[int, int]], native: tuple[int, int]) -> None:
        mask, flags = native
        self._fd, self._pieces = fd, pieces
        self._outputs = [procfs.scan_buffer() for _ in pieces]
        self._args = [procfs.scan_arg(start, end, mask, flags=flags, regions=out)
                      for (start, end), out in zip(pieces, self._outputs)]
        self._calls = [(NR_IOCTL, (fd, procfs.PAGEMAP_SCAN, ctypes.addressof(arg))) for arg in self._args]
        self._batch: nativeworker.Batch | None = None

    def submit(self, cpus: set[int]) -> bool:
        """Begin the scans on `cpus`; False if the native worker cannot take them."""
        self._batch = nativeworker.submit(self._calls, cpus, keep=(self._args, self._outputs))
        return self._batch is not None

    def wait(self) -> list[int]:
        """Each piece's ioctl result, once all are made (those not begun: here); none if not submitted."""
        return self._batch.results() if self._batch is not None else []

    def result(self, pid: int, scan: Scan) -> list[procfs.PageRanges]:
        """Each piece's pages; a piece whose output filled up is scanned on from where its
        walk ended by `scan` (pagemap fd, start, end, regions), here."""
        found = []
        for (start, end), arg, out, count in zip(self._pieces, self._args, self._outputs, self.wait()):
            if count < 0:
                raise CheckpointError(f"PAGEMAP_SCAN of process {pid} failed: {os.strerror(-count)}")
            ranges = [(first, last) for first, last, _ in procfs.scan_found(out, count)]
            if (walk_end := arg[procfs.SCAN_WALK_END]) < end:
                ranges += scan(self._fd, walk_end, end, out)
            found.append(ranges)
        return found


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
