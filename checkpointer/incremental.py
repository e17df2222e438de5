"""Incremental checkpoints: only the pages written since the previous checkpoint.

What: `Incremental` keeps, across checkpoints of the same processes, one
`DirtyTracker` per process and the previous image. A tracker owns a userfaultfd of
the process (created by an injected userfaultfd(), taken with pidfd_getfd) in
WP_ASYNC mode: every private writable mapping is registered and write-protected;
a write just marks the page (about 2 us, no fault handler), and PAGEMAP_SCAN on
/proc/PID/pagemap returns the pages written since the last scan and re-protects
them in one call. A checkpoint then stores only those pages; mappings that are new
or changed (mmap, brk growth, mprotect) are captured whole and registered. The image
is the parent's tree, copied in O(1), with those blocks patched (image.py), so every
image is complete and restores alone.
A process that exec()ed since the previous checkpoint has new memory, which the old
userfaultfd does not track (DirtyTracker.same_memory): it is captured whole and tracked
afresh. Each capture is a treecapture.TreeCapture, which the group daemon
(slsfs.group_checkpoint) runs with this object too.
Why: a checkpoint of a large process that wrote little is small and fast.

`precopy()`, called while the processes still run, just before the freeze, shortens the
stop of an incremental checkpoint: it scans and re-protects each tracked mapping and
copies the pages written since the previous checkpoint at once. The scan inside the stop
then lists only the pages written after that re-protection: those are copied in the stop
(or from a fork snapshot), and their pre-copies are dropped; a pre-copied page not
written again was not written between its copy and the freeze, so its copy holds the
checkpoint instant's contents. Pre-copies of a mapping that is not tracked the same way at
the stop (gone, changed, re-mapped) are dropped, as that mapping is stored whole; a mapping
whose pre-copy failed (it changed under the scan or the copy) is stored whole too (its
written pages were re-protected: the stop's scan no longer lists them).

`prearm(pids)`, called before the freeze of a full capture (the first one, or the first
after a reset), makes its stop that of an incremental one. Without it, the stop of a full
capture of 2 GiB write-protected every private writable mapping to start the tracking
(~11-15 ms per GiB, UFFDIO_WRITEPROTECT) and forked a snapshot to copy every page from
after the thaw (~15 ms per GiB of page tables copied): 72-99 ms. Instead each large
process gets its userfaultfd in a short stop of its main thread alone (the injected
userfaultfd() must run in the process; ~0.5 ms); then, the process running, its mappings
are registered and write-protected, and every page a full image holds of them is
pre-copied, as `precopy()` copies the written ones. The capture takes the pre-armed
mappings as tracked: its stop scans them for the pages written since the protection (a
write-protect scan, ~1 ms per GiB), copies those, and the image holds the pre-copies of
the others. A mapping unmapped and mapped again at the same place meanwhile (same
signature, not registered) is found by the stop (DirtyTracker.scan_runs) and stored whole, as is any
mapping new or changed since the pre-arming. The cost: the process's memory is held
twice (its pre-copy) until the image is stored, so a process is pre-armed only when its
anonymous memory is less than a quarter of the memory available.

`capture_snapshot` shortens the stop further: the pages are copied after the thaw from
a fork snapshot (copy-on-write) made while frozen, or read into memory inside the stop
when they are few next to the process's resident memory (snapshot.PageCopy decides).
Either way the pages are stored (hashed, compressed, appended) by `complete()`, after
the thaw.

The pages written again after the pre-copy are copied inside the stop on the other CPU, while
the tracer reads the rest of the process (snapshot.PageCopy.selected), into memory prepared
by `precopy()` (copybuffer.py).
Why they are still copied inside the stop, not after the thaw with user-space copy-on-write (measured on this kernel, 6.18, 2026-11-30; the
experiments are in the note of that day):
- The tracking userfaultfd is WP_ASYNC: a write to a protected page is resolved by the
  kernel (~1.3 us) and never reaches a reader. Its mode cannot change (a second UFFDIO_API
  answers EINVAL) and a second, synchronous userfaultfd cannot register the same range
  (EBUSY). Moving a range to a second one needs UFFDIO_UNREGISTER, which clears the
  write-protection of every page in it, splits the VMA (its signature here changes: the
  mapping would be stored whole next time) and does not merge back when registered again.
- A synchronous fault costs the writer a round trip to our reader: median 16 us, p99
  40-110 us with an idle Python reader (process_vm_readv of the page 4 us, then
  UFFDIO_WRITEPROTECT mode 0), against ~2.5 us per page copied in the stop.
- The pages left for the stop are the hot ones: Redis under redis-benchmark rewrites
  ~600-800 pages in any window of a few ms or more (a second and third pre-copy round cut
  them only from 791 to 625 per stop, for 2.4x the pre-copy's CPU). After a thaw most of
  them would fault at once: ~700 x 16+ us of stalls, more than the ~1.5-2 ms they cost
  inside the stop.
- A userfaultfd made UFFD_USER_MODE_ONLY (what a target without CAP_SYS_PTRACE may make)
  turns a kernel write into a protected page (read(2) into a buffer) into EFAULT for the
  application; without that flag the kernel's write faults to the reader and succeeds.

Simplifications: pages dropped inside an unchanged mapping (MADV_DONTNEED) keep their
old contents in the image. Shared anonymous memory is followed the same way
(shared_memory.py); other shared memory is captured whole every time.
"""
from __future__ import annotations

import ctypes
import bisect
import errno
import os
from typing import Callable, Iterable

from objectstore import ChunkId, Store

from . import copier, injection_page, kernel, lazy, nativeworker, procfs, shared_memory, uffd, watchdog
from .capture import PageSelector, injecting, saved_ranges, vma_kind
from .copybuffer import CopyBuffer
from .treecapture import Precopied, TreeCapture
from .errors import CheckpointError, ProcessGone
from .freeze import Frozen, FrozenProcess, main_thread_stopped
from .image import ImageWriter
from .mounttypes import MountTypes
from .pageread import copy_pages
from .sharedscan import SharedScan, pieces
from .snapshot import Snapshot
from .stopwatch import phase
from .uffd import UFFD_API, UFFDIO_API, UFFDIO_REGISTER, iowr

UFFDIO_WRITEPROTECT = iowr(0xAA, 0x06, 24)
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
PM_SCAN_WP_MATCHING, PM_SCAN_CHECK_WPASYNC = 1 << 0, 1 << 1
_WRITTEN_SCAN = (procfs.PAGE_IS_WRITTEN, PM_SCAN_WP_MATCHING)   # DirtyTracker._scan_written's (mask, flags)
SPAN_BREAK_BYTES = 8 << 20     # an untracked mapping this large ends a span of scan_runs
# From 256 MiB of tracked memory the stop's scan for written pages (0.3-0.45 ms per GiB) is
# shared with the other CPU (sharedscan.py), in pieces of 256 MiB (~0.1 ms each; pieces of
# 64 and 128 MiB did worse at 2 GiB: each piece is a hand-over of Python's lock between the
# two threads). Below, waking the worker costs about what it saves.
SHARED_SCAN_BYTES = 256 << 20
SCAN_PIECE_BYTES = 256 << 20
ALL_ADDRESSES = 1 << 63
# 4 MiB: copied in the stop in ~2-3 ms. Below, a pre-copy (a read of the maps, a scan of every
# tracked mapping, the pages written again copied twice) cost the daemon more CPU than it
# saved in the stop (Redis 16 MiB, 600-900 pages per checkpoint: +5-10 ms of CPU per checkpoint)
PRECOPY_MIN_PAGES = 1024
# 64 MiB of private writable mappings: write-protecting them costs ~1 ms, about what the
# pre-arming's own stop (a freeze of the main thread and two injected calls) costs
PREARM_MIN_BYTES = 64 << 20
with open("/proc/sys/vm/mmap_min_addr") as _f:
    _PROBE_ADDRESS = max(int(_f.read()), kernel.PAGE_SIZE)  # the lowest page a process may map


class _NotTracked(CheckpointError):
    """PAGEMAP_SCAN met a VMA that is not registered with the userfaultfd (EPERM)."""


def _ioctl(fd: int, request: int, buf: ctypes.Array, what: str) -> int:
    try:
        return uffd.ioctl(fd, request, buf, what)
    except CheckpointError as exc:
        if exc.errno == errno.EPERM:
            raise _NotTracked(str(exc)) from None
        raise


def _trackable(vma: procfs.Vma) -> bool:
    return not vma.shared and "w" in vma.perms and vma_kind(vma) in ("anon", "file")


def _by_mapping(runs: list[tuple[int, bytes]], ends: list[tuple[tuple, int]]) -> dict[tuple, list[tuple[int, bytes]]]:
    """The runs (address order) of one copy of several mappings' pages, by mapping: `ends`
    holds (signature, end address) of each mapping the pages came from, in address order.
    A run that goes on into the next mapping (two adjacent mappings, both written at their
    border) is cut there."""
    result: dict[tuple, list[tuple[int, bytes]]] = {}
    at = 0
    for addr, data in runs:
        view = memoryview(data)
        while view:
            while ends[at][1] <= addr:
                at += 1
            sig, end = ends[at]
            part = view[:end - addr]
            result.setdefault(sig, []).append((addr, part))
            addr, view = addr + len(part), view[len(part):]
    return result


def _meets(vma: procfs.Vma, ranges: list[tuple[int, int, int]]) -> bool:
    """Whether any of `ranges` ((start, end, categories), address order) overlaps `vma`."""
    at = bisect.bisect_right(ranges, (vma.start, ALL_ADDRESSES))
    return (at > 0 and ranges[at - 1][1] > vma.start) or (at < len(ranges) and ranges[at][0] < vma.end)


def _split(ranges: procfs.PageRanges, vmas: list[procfs.Vma]) -> dict[tuple, procfs.PageRanges]:
    """The parts of `ranges` (address order, disjoint) inside each of `vmas`, by its
    signature (the kernel joins written pages across two adjacent mappings into one range;
    parts outside every one of `vmas` are left out). Found by bisection, a Python step per
    mapping, not per range (a Redis stop: ~460 ranges over ~30 tracked mappings)."""
    starts = [start for start, _ in ranges]
    result: dict[tuple, procfs.PageRanges] = {}
    for vma in vmas:
        first = bisect.bisect_right(starts, vma.start) - 1       # one starting before may reach in
        if first < 0 or ranges[first][1] <= vma.start:
            first += 1
        part = ranges[first:bisect.bisect_left(starts, vma.end)]
        if part and (part[0][0] < vma.start or part[-1][1] > vma.end):
            part = [(max(start, vma.start), min(end, vma.end)) for start, end in part]
        result[vma.signature] = part
    return result


class DirtyTracker:
    """Write tracking of one process's memory (a userfaultfd in WP_ASYNC mode)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.uffd: int | None = None
        self.pagemap: int | None = None   # /proc/PID/pagemap, opened with the userfaultfd (_open_uffd)
        self.seen: set[tuple] = set()     # VMA signatures as of the last checkpoint
        self.armed: set[tuple] = set()    # ... of those registered and write-protected
        self.shared_armed: set[tuple] = set()  # ... of shared memory (shared_memory.py), likewise
        self._regions = procfs.scan_buffer()  # PAGEMAP_SCAN's output, reused (by this thread)
        self.precopied: dict[tuple, list[tuple[int, bytes]]] = {}   # VMA signature -> runs copied before the freeze
        self.scanned: dict[tuple, procfs.PageRanges] = {}   # VMA signature -> pages written (scan_runs)
        self._scanning: tuple[SharedScan, list[procfs.Vma]] | None = None   # a scan_runs still going on, its mappings
        self._armed_vmas: list[procfs.Vma] = []     # the memory map as the last arm() saw it
        self._planned: SharedScan | None = None     # the next stop's early scan, made ready (plan_scan)
        self._early: SharedScan | None = None       # that scan, begun with the stop (start_scan)
        self._probe = (ctypes.c_uint64 * 3)(_PROBE_ADDRESS, kernel.PAGE_SIZE, 0)   # same_memory's, made once

    def precopy(self, buffers: CopyBuffer | None = None) -> int:
        """The process running: copy the pages of each tracked mapping written since the
        last scan (re-protecting them) into `precopied` (read into `buffers`, prepared by
        the caller); the pages copied."""
        self.precopied = {}
        if self.uffd is None:
            return 0
        return self._copy_ahead(procfs.maps(self.pid), self._scan, buffers)

    def _copy_ahead(self, vmas: list[procfs.Vma], scan: Callable[[int, procfs.Vma], procfs.PageRanges],
                    buffers: CopyBuffer | None = None) -> int:
        """Copy the pages `scan(pagemap fd, vma)` names of each tracked VMA of `vmas` into
        `precopied` (into `buffers`, or new memory); the pages copied. One pagemap
        descriptor scans every mapping, and one
        copy (pageread.copy_pages: a read per 1024 runs) takes the pages of all of them, each
        mapping then given its own runs (`_by_mapping`). A mapping whose scan fails (it
        changed meanwhile) is no longer taken as tracked: the stop stores it whole; so is
        every scanned mapping when the copy fails (one of them went away under it), as
        their written pages were re-protected by the scan."""
        scanned: list[tuple[tuple, procfs.Vma, procfs.PageRanges]] = []
        for vma in vmas:
            sig = vma.signature
            if sig not in self.armed:
                continue
            try:
                ranges = scan(self.pagemap, vma)
            except (CheckpointError, OSError):
                self.armed.discard(sig)
                continue
            if ranges:
                scanned.append((sig, vma, ranges))
        runs: list[tuple[int, bytes]] = []
        try:
            copy_pages(self.pid, [span for _, _, ranges in scanned for span in ranges],
                       lambda addr, data: runs.append((addr, data)), buffers)
        except (CheckpointError, OSError):
            self.armed.difference_update(sig for sig, _, _ in scanned)
            return 0
        self.precopied = _by_mapping(runs, [(sig, vma.end) for sig, vma, _ in scanned])
        return sum(procfs.range_pages(ranges) for _, _, ranges in scanned)

    def scan_runs(self, vmas: list[procfs.Vma], cpus: set[int] | None = None) -> None:
        """Frozen, before `select`: the pages written in every tracked mapping of `vmas`
        (address order), kept by mapping for `select`, with two PAGEMAP_SCANs per span of
        them (`_spans`), not one per mapping (Redis: ~29 scans a stop, 0.2-0.4 ms at load
        10-14). First the span is asked where its memory is NOT write-tracked: the kernel
        walks only the untracked mappings' page tables for that (it passes over a tracked
        one by its flags); a tracked mapping found there was unmapped and mapped again at
        the same place (same signature, no longer registered) and is stored whole. Then
        its written pages are taken and re-protected: the kernel passes over the mappings
        not registered (our own injection page among them) and the holes. That second
        walk costs ~0.45 ms per GiB tracked whatever was written: from SHARED_SCAN_BYTES
        on it runs on `cpus` (copier.other_cpus) and on ours once `select` needs it
        (sharedscan.py), while the capture goes on; after a pre-copy it was begun already,
        first thing in the stop (start_scan), and is taken over here."""
        self.cancel_scan(early=False)
        self.scanned = {}
        spans: list[tuple[int, int, list[procfs.Vma]]] = []   # (start, end, tracked mappings still tracked)
        for start, end, tracked in self._tracked_spans(vmas):
            try:
                untracked = procfs.page_ranges(self.pagemap, start, end, procfs.PAGE_IS_WPALLOWED,
                                               inverted=procfs.PAGE_IS_WPALLOWED, regions=self._regions)
            except OSError as exc:
                raise CheckpointError(f"PAGEMAP_SCAN of process {self.pid} failed: {exc.strerror}") from None
            lost = {vma.signature for vma in tracked if _meets(vma, untracked)}
            self.armed -= lost
            spans.append((start, end, [vma for vma in tracked if vma.signature not in lost]))
        kept = [vma for _, _, tracked in spans for vma in tracked]
        if self._early is not None:     # begun with the stop over the mappings armed then: kept is among them
            self._scanning, self._early = (self._early, kept), None
            return
        if cpus and sum(vma.end - vma.start for vma in kept) >= SHARED_SCAN_BYTES:
            scan = SharedScan(self.pid, pieces(spans, SCAN_PIECE_BYTES), self._scan_written, _WRITTEN_SCAN).start(cpus)
            self._scanning = (scan, kept)
            return
        for start, end, tracked in spans:
            self.scanned.update(_split(self._scan_written(self.pagemap, start, end), tracked))

    def _scan_written(self, pagemap: int, start: int, end: int, regions: ctypes.Array | None = None
                      ) -> procfs.PageRanges:
        """The pages written in the tracked mappings of [start, end), re-protected (the
        others there passed over), with `regions` as PAGEMAP_SCAN's output (one per thread)."""
        return self._scan_range(pagemap, start, end, checked=False, regions=regions)

    def _scanned(self) -> dict[tuple, procfs.PageRanges]:
        """`scanned`, once the scan scan_runs left to go on is done."""
        if self._scanning is not None:
            scan, vmas = self._scanning
            self._scanning = None
            self.scanned.update(_split(scan.result(), vmas))
        return self.scanned

    @property
    def scanning(self) -> bool:
        """Whether a scan scan_runs left going on (on the other CPU) is still to be asked for."""
        return self._scanning is not None

    def cancel_scan(self, early: bool = True) -> None:
        """Let a scan that scan_runs left going on (and, `early`, one start_scan began, or
        plan_scan made ready) end, unasked (after a failed capture)."""
        if self._scanning is not None:
            self._scanning[0].cancel()
            self._scanning = None
        if early:
            for scan in (self._early, self._planned):
                if scan is not None:
                    scan.cancel()
            self._early = self._planned = None

    def plan_scan(self) -> None:
        """Before a freeze (Incremental.precopy): the pieces the next stop's scan for
        written pages will cover, if that scan is to be shared with the other CPU
        (SHARED_SCAN_BYTES tracked): those of the mappings armed now, by their extents when
        last armed (a mapping armed keeps its extent: another one is not armed any more),
        made ready to start (SharedScan: its pagemap descriptor and calls). That descriptor is
        of the memory the process has now: start_scan starts the scan only if the process
        still has it (same_memory: no exec() since), or else lets it go. None is made if
        the pagemap cannot be opened (the process gone: the freeze sees it). The extents of
        the armed mappings, summed from their signatures, settle it first for most processes
        (less than SHARED_SCAN_BYTES): the spans of the map were ~0.1 ms of the daemon's CPU
        before every freeze of an idle Redis (119 mappings), to find that no scan is shared."""
        if self._planned is not None:
            self._planned.cancel()
            self._planned = None
        if sum([sig[1] - sig[0] for sig in self.armed]) < SHARED_SCAN_BYTES:
            return      # (at most that many bytes are tracked: no walk over a map of hundreds of mappings)
        spans = self._tracked_spans(self._armed_vmas)
        if sum(vma.end - vma.start for _, _, span in spans for vma in span) >= SHARED_SCAN_BYTES:
            try:
                self._planned = SharedScan(self.pid, pieces(spans, SCAN_PIECE_BYTES), self._scan_written,
                                           _WRITTEN_SCAN)
            except (ProcessGone, OSError):
                pass

    def start_scan(self, cpus: set[int]) -> None:
        """Frozen, first thing in the stop: begin the scan for written pages on `cpus` over
        the pieces plan_scan chose, before the memory map is read (scan_runs takes it over).
        Every mapping the stop finds still tracked was armed then, with the same extent, so
        the pieces cover it; what else they cover the scan passes over (not registered: a
        mapping made since) or the capture stores whole (armed, but its extent or
        protection changed since: another signature), as scan_runs' own scan does with the
        mappings between tracked ones. The scan of a 2 GiB process (0.5-0.7 ms of the stop
        on two CPUs) begins ~0.25 ms earlier, under the status and maps reads."""
        planned, self._planned = self._planned, None
        if planned is None:
            return
        if cpus and self._early is None and self.same_memory():
            self._early = planned.start(cpus)
        else:
            planned.cancel()

    def _tracked_spans(self, vmas: list[procfs.Vma]) -> list[tuple[int, int, list[procfs.Vma]]]:
        """(start, end, the tracked mappings there) of each span of `vmas` (`_spans`)."""
        spans = []
        for span in self._spans(vmas):
            tracked = [vma for vma in span if vma.signature in self.armed]
            spans.append((tracked[0].start, tracked[-1].end, tracked))
        return spans

    def _spans(self, vmas: list[procfs.Vma]) -> list[list[procfs.Vma]]:
        """The mappings of `vmas` from each tracked one to the last tracked one before a
        followed shared memory mapping (its written pages are shared_memory.py's to take:
        `written_shared`) or an untracked mapping of SPAN_BREAK_BYTES or more (the question
        where memory is not tracked walks its page tables: ~1.3 ms per GiB)."""
        spans: list[list[procfs.Vma]] = [[]]
        for vma in vmas:
            sig = vma.signature
            if sig in self.armed:
                spans[-1].append(vma)
            elif sig in self.shared_armed or vma.end - vma.start >= SPAN_BREAK_BYTES:
                spans.append([])
            elif spans[-1]:
                spans[-1].append(vma)
        return [span for span in spans if span]

    def select(self, vma: procfs.Vma) -> tuple[bool, procfs.PageRanges | None]:
        """(whole, ranges): the pages of this VMA to store now; whole = the VMA is new or changed."""
        sig = vma.signature
        if (written := self._scanned().pop(sig, None)) is not None:
            return False, written
        if sig in self.armed:
            try:
                return False, self._written(vma)
            except _NotTracked:  # unmapped and mapped again at the same place: a new VMA
                self.armed.discard(sig)
        if sig in self.seen and "w" not in vma.perms:
            return False, None  # unchanged and not writable: nothing can differ
        if sig in self.seen and vma.shared:
            return True, None   # its contents are read from the shared object; guard pages looked for when new
        return True, saved_ranges(self.pid, vma)

    def _written(self, vma: procfs.Vma) -> procfs.PageRanges:
        """Pages written since the last scan (re-protected by the same call)."""
        return self._scan(self.pagemap, vma)

    def _scan(self, pagemap: int, vma: procfs.Vma) -> procfs.PageRanges:
        """`_written` through an open /proc/PID/pagemap descriptor. Written pages alone are
        asked for: the kernel's fast path for that question tests one bit per page table
        entry (~0.5 ms per GiB) where any other category costs a full look at each entry
        (~1.1 ms per GiB; measured at 2 GiB on 6.18, 2026-11-30). Guard pages are not
        asked about: this kernel cannot install one in memory the tracking follows (the
        madvise spins while the tracking lasts), and a guard marker that did appear would
        be reported written and refused by name by the copy (pageread.deliver)."""
        return self._scan_range(pagemap, vma.start, vma.end)

    def _scan_range(self, pagemap: int, start: int, end: int, checked: bool = True,
                    regions: ctypes.Array | None = None) -> procfs.PageRanges:
        """`_scan` of [start, end): every mapping there must be tracked (else _NotTracked);
        not `checked`: the mappings there that are not are passed over. `regions`: the
        output buffer (this tracker's own by default: one thread at a time)."""
        try:
            ranges = procfs.page_ranges(pagemap, start, end, procfs.PAGE_IS_WRITTEN,
                                        regions=self._regions if regions is None else regions,
                                        flags=PM_SCAN_WP_MATCHING | (PM_SCAN_CHECK_WPASYNC if checked else 0))
        except OSError as exc:
            if exc.errno == errno.EPERM:
                raise _NotTracked(f"PAGEMAP_SCAN of process {self.pid}: not tracked") from None
            raise CheckpointError(f"PAGEMAP_SCAN of process {self.pid} failed: {exc.strerror}") from None
        return [(start, end) for start, end, _ in ranges]

    def written_shared(self, vma: procfs.Vma) -> list[int] | None:
        """The pages of a shared memory mapping written since the last scan (re-protected);
        None if it is not write-protected (new, changed, or not writable)."""
        sig = vma.signature
        if sig in self.shared_armed:
            try:
                return [page for start, end in self._written(vma) for page in range(start, end, kernel.PAGE_SIZE)]
            except _NotTracked:
                self.shared_armed.discard(sig)
        return None

    def prearm(self, frozen_main: FrozenProcess) -> None:
        """Before the first capture's freeze: take a userfaultfd from the process (its main
        thread stopped, `frozen_main`); `protect_and_copy()` follows, after that thaw."""
        self._open_uffd(frozen_main)

    def protect_and_copy(self, vmas: list[procfs.Vma]) -> int:
        """The process running: register and write-protect each private writable VMA of
        `vmas` (read before), then copy the pages a full image holds of each (as
        capture.saved_ranges names them) into `precopied`; the pages copied. The first
        capture takes these mappings as tracked: it stores those pre-copies less the pages
        written since the protection, which its stop copies. One that changed meanwhile
        (a call fails) is stored whole by that capture."""
        for vma in vmas:
            if _trackable(vma):
                try:
                    self._protect(vma)
                except CheckpointError:
                    continue
                self.armed.add(vma.signature)
        return self._copy_ahead(vmas, lambda _, vma: procfs.dirty_ranges(self.pid, vma))

    def arm(self, proc: FrozenProcess, vmas: list[procfs.Vma]) -> None:
        """While still frozen: track every new or changed private writable VMA, and
        writable mapping of followed shared memory, from now on."""
        self.cancel_scan()      # (every mapping was selected: the scan was asked for and is done;
        if self.uffd is None:   # a plan of the mappings armed before is stale: let go)
            self._open_uffd(proc)
        current = {v.signature for v in vmas}
        for vma in vmas:
            sig = vma.signature
            if sig in self.armed or sig in self.shared_armed:
                continue        # (most of them: only a new or changed mapping is looked at)
            if _trackable(vma):
                self._protect(vma)
                self.armed.add(sig)
            elif "w" in vma.perms and shared_memory.followed(vma):
                self._protect(vma)
                self.shared_armed.add(sig)
        self.armed &= current
        self.shared_armed &= current
        self.seen = current
        self._armed_vmas = vmas
        self.precopied, self.scanned = {}, {}

    def _protect(self, vma: procfs.Vma) -> None:
        size = vma.end - vma.start
        reg = (ctypes.c_uint64 * 4)(vma.start, size, UFFDIO_REGISTER_MODE_WP, 0)
        _ioctl(self.uffd, UFFDIO_REGISTER, reg, f"UFFDIO_REGISTER of {vma.start:#x}")
        wp = (ctypes.c_uint64 * 3)(vma.start, size, UFFDIO_WRITEPROTECT_MODE_WP)
        _ioctl(self.uffd, UFFDIO_WRITEPROTECT, wp, f"UFFDIO_WRITEPROTECT of {vma.start:#x}")

    def _open_uffd(self, proc: FrozenProcess) -> None:
        """Take the tracking userfaultfd from the process (`uffd`) and open its pagemap
        (`pagemap`), both of the memory it has now. The pagemap descriptor is kept with the
        userfaultfd rather than opened at every scan (an open and a close of /proc/PID/
        pagemap in every stop and every pre-copy): it names the memory the process had at
        its open, as the userfaultfd does, and a tracker whose process has exec()ed since
        is replaced (same_memory) before it scans."""
        with injecting(proc.pid, proc.main) as inj:
            # user-mode only: the target may run as any user (a non-root postgres, say)
            fd = uffd.take_from(inj, proc.pid, "write tracking", user_mode_only=True)
        api = (ctypes.c_uint64 * 3)(UFFD_API, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, 0)
        try:
            _ioctl(fd, UFFDIO_API, api, "UFFDIO_API (WP_ASYNC)")
            self.pagemap = os.open(f"/proc/{proc.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except (CheckpointError, OSError):
            os.close(fd)
            raise
        self.uffd = fd

    def same_memory(self) -> bool:
        """False once the process has exec()ed: the userfaultfd belongs to the memory it had
        then, and a write-protect call through it answers ESRCH. The probe un-protects the
        page at mmap_min_addr, which no mapping normally covers (ENOENT); if a tracked one
        does, that page is merely stored once more."""
        if self.uffd is None:
            return True
        return uffd.raw_ioctl(self.uffd, UFFDIO_WRITEPROTECT, self._probe) == 0 or ctypes.get_errno() != errno.ESRCH

    def close(self) -> None:
        self.cancel_scan()
        for fd in (self.uffd, self.pagemap):
            if fd is not None:
                os.close(fd)
        self.uffd = self.pagemap = None


class Incremental:
    """Successive checkpoints of the same processes, each storing only what changed.

        inc = Incremental()
        with freeze(pids, tree=True) as frozen:
            root = inc.capture(frozen, store)   # full the first time, then incremental
        ...
        inc.close()
    """

    def __init__(self) -> None:
        self.parent: ChunkId | None = None
        self.trackers: dict[int, DirtyTracker] = {}
        self.prearmed: dict[int, DirtyTracker] = {}   # trackers armed before a full capture's freeze (prearm)
        self.last_pages = 0  # pages stored by the last capture
        self.last_precopied = 0  # ... of those, pages copied before its freeze (precopy)
        self.kept_pages: set[int] = set()   # pids given an injection page to keep (injection_page.py)
        self.shared = shared_memory.SharedMemoryTracking()
        self.buffers = CopyBuffer()   # for the pages the stop copies; prepared by precopy()
        self.precopy_buffers = CopyBuffer()   # ... and for those precopy() copies
        self.mount_types = MountTypes()   # the processes' mount tables, read again only when changed

    def precopy(self, min_pages: int = PRECOPY_MIN_PAGES) -> int:
        """Before the freeze, the processes running: copy the pages written since the last
        checkpoint (see the module docstring); the next capture keeps those not written
        again and copies only the others in the stop. The pages copied. First, the
        VmFlags of mappings made since are read (procfs.note_new_vm_flags), not in the stop. Skipped (0) when
        the last capture stored fewer than `min_pages`: a pre-copy costs a read of the maps
        and a scan of every tracked mapping, more than copying a few pages in the stop. The
        pages are read into `precopy_buffers`, memory used again from one pre-copy to the
        next once the pages read there were stored (copybuffer.py). Either way the memory the stop copies into is made ready (`buffers`), and the
        thread that copies there (copier.py) and the watchdog of the freeze's scheduling
        changes (watchdog.py) started, and each large tracked process's scan of the stop
        planned (DirtyTracker.plan_scan: begun as soon as the stop begins)."""
        self.buffers.prepare()
        copier.start()
        nativeworker.start()
        watchdog.start()        # (its first start takes ~6 ms: not in the first stop)
        with phase("before_freeze_vm_flags"):
            for pid in self.trackers:
                try:
                    procfs.note_new_vm_flags(pid)
                except ProcessGone:
                    continue        # the freeze sees it gone
        self.last_precopied = self._precopy_all() if self.last_pages >= min_pages else 0
        for tracker in self.trackers.values():
            tracker.plan_scan()
        return self.last_precopied

    def _precopy_all(self) -> int:
        """Each tracker's pre-copy (precopy) into `precopy_buffers`; the pages copied."""
        for tracker in self.trackers.values():
            tracker.precopied = {}      # (views of precopy_buffers: let go before it is prepared)
        self.precopy_buffers.prepare()
        copied = 0
        for tracker in self.trackers.values():
            try:
                copied += tracker.precopy(self.precopy_buffers)
            except (ProcessGone, OSError):
                continue        # it exited: the freeze sees it gone
        return copied

    def prearm(self, pids: Iterable[int], min_bytes: int = PREARM_MIN_BYTES) -> int:
        """Before the freeze of a full capture (none made yet, or reset since), the
        processes running: arm the write tracking of `pids` and their descendants with at
        least `min_bytes` of private writable memory now, and pre-copy their pages, so that
        the capture's stop does neither (see the module docstring). Each is stopped alone
        (its main thread) for its userfaultfd, recorded as "before_freeze_prearm_stop".
        The processes pre-armed. A process that cannot be (gone, refusing the call, too
        large for the memory available) is captured whole in the stop, as before."""
        if self.parent is not None or self.trackers:
            return 0
        armed = 0
        available = procfs.memory_available()
        for pid in procfs.with_descendants(pids):
            try:
                lazy.check_served(pid)    # memory still coming in from a page server: the capture refuses it
                vmas = [vma for vma in procfs.maps(pid) if _trackable(vma)] if pid not in self.prearmed else []
                anonymous = int(procfs.status(pid).get("RssAnon", "0 kB").split()[0]) << 10
            except CheckpointError:       # that, or the process is gone
                continue
            if sum(vma.end - vma.start for vma in vmas) < min_bytes or anonymous * 4 > available:
                continue
            tracker = DirtyTracker(pid)
            try:
                with main_thread_stopped(pid, "before_freeze_prearm_stop") as alone:
                    tracker.prearm(alone)
                with phase("before_freeze_prearm_protect_copy"):
                    tracker.protect_and_copy(vmas)
            except (CheckpointError, OSError):
                tracker.close()
                continue
            self.prearmed[pid] = tracker
            armed += 1
            with phase("before_freeze_vm_flags"):
                procfs.note_vm_flags(pid)   # smaps' page-table walk (~1 ms per 100 MiB) out of the stop
        return armed

    def capture(self, frozen: Frozen, store: Store) -> ChunkId:
        """Capture inside the freeze window (pages copied while the processes are stopped)."""
        return self._capture(frozen, store, snapshot=False).complete()

    def capture_snapshot(self, frozen: Frozen, store: Store) -> "Pending":
        """Capture metadata and the list of pages inside the freeze window, plus a fork
        snapshot of each process's memory (an injected clone: copy-on-write, so the
        stop does not grow with the memory to copy). After the thaw, `complete()` copies
        the pages from the snapshots and returns the image root."""
        return self._capture(frozen, store, snapshot=True)

    def _capture(self, frozen: Frozen, store: Store, snapshot: bool) -> "Pending":
        try:
            with phase("early_scan_start"):
                cpus = copier.other_cpus(frozen.pinning)
                for pid, tracker in self.trackers.items():
                    if pid in frozen.processes:
                        tracker.start_scan(cpus)
            with phase("image_setup"):
                tree = TreeCapture(self, ImageWriter(store, self.parent), fork=snapshot)
        except BaseException:
            for tracker in self.trackers.values():
                tracker.cancel_scan()
            raise
        try:
            tree.in_stop(frozen)
            with phase("alive_check"):
                frozen.check_alive()
        except BaseException:
            for tracker in self.trackers.values():
                tracker.cancel_scan()
            tree.drop(frozen)
            raise
        return Pending(self, tree)

    def selector(self, frozen: Frozen, ns_pids: dict[int, int],
                 clear: Callable[[int, int, int], None], precopied: Precopied | None = None) -> PageSelector:
        """The capture's page selector for this freeze window. First the trackers follow
        the frozen processes: those of processes gone are closed; a process new here, or
        one that exec()ed since the last capture (its memory is new; the old tracker's
        userfaultfd belongs to the memory it had), starts clean: `clear(ns pid, 0,
        ALL_ADDRESSES)` drops whatever the parent image holds under its PID (it may be a
        dead process's). Mappings gone since are cleared, and so is each mapping stored
        whole (new or changed). The pages `precopy()` copied of each mapping still tracked go to
        `precopied` as it is selected, with the pages written again since (copied in the stop):
        the caller stores `precopied.runs()`, those pre-copies less the pages written again."""
        self.kept_pages.update(frozen.processes)   # capture_all(keep_injection_page=True) follows
        for pid in list(self.trackers):
            if pid not in frozen.processes:
                self.trackers.pop(pid).close()
        for pid in frozen.processes:
            tracker = self.trackers.get(pid)
            if tracker is not None and not tracker.same_memory():
                self.trackers.pop(pid).close()
                tracker = None
            if tracker is None:
                tracker = self.prearmed.pop(pid, None)
                if tracker is not None and not tracker.same_memory():
                    tracker.close()
                    tracker = None
                self.trackers[pid] = tracker or DirtyTracker(pid)
                clear(ns_pids[pid], 0, ALL_ADDRESSES)
                continue
            vmas = procfs.maps(pid)       # (read once: ~160 us for a Redis's 116 mappings)
            for start, end, *_ in tracker.seen - {v.signature for v in vmas}:
                clear(ns_pids[pid], start, end)
            tracker.scan_runs(vmas, copier.other_cpus(frozen.pinning))
        self._close_prearmed()      # of processes not in this freeze
        self.shared.scan(self.trackers)

        def select(pid: int, vma: procfs.Vma) -> procfs.PageRanges | None:
            tracker = self.trackers[pid]
            whole, ranges = tracker.select(vma)
            runs = tracker.precopied.pop(vma.signature, ())
            if whole:
                clear(ns_pids[pid], vma.start, vma.end)
            elif runs:
                if precopied is None:
                    raise CheckpointError("pages were copied before the freeze (precopy) but the "
                                          "capture was given nowhere to put them")
                precopied.kept.append((ns_pids[pid], runs, ranges or []))
            return ranges
        return select

    def scanning(self, pid: int) -> bool:
        """Whether the written pages of `pid` are still being scanned for on the other CPU
        (capture_all reads its fds first, meanwhile)."""
        tracker = self.trackers.get(pid)
        return tracker is not None and tracker.scanning

    def arm(self, frozen: Frozen) -> None:
        """Still frozen, after the capture: track writes from this instant on."""
        for pid, proc in frozen.processes.items():
            self.trackers[pid].arm(proc, procfs.maps(pid))
        self.shared.commit()

    def release_pages(self, still: Iterable[int] = ()) -> None:
        """Unmap the injection pages of the processes not in `still` (no longer checkpointed
        by us: gone, or out of the tree). In the tracer thread, outside a freeze window:
        each is frozen for it."""
        for pid in self.kept_pages - set(still):
            injection_page.release(pid)
        self.kept_pages &= set(still)

    def close(self, release_pages: bool = True) -> None:
        """`release_pages`: unmap the injection pages too (see release_pages)."""
        if release_pages:
            self.release_pages()
        for tracker in self.trackers.values():
            tracker.close()
        self.trackers.clear()
        self._close_prearmed()
        self.shared.clear()
        self.mount_types.close()

    def _close_prearmed(self) -> None:
        for tracker in self.prearmed.values():
            tracker.close()
        self.prearmed.clear()

    def reset(self) -> None:
        """Forget everything (after a failed checkpoint): the next capture stores every page.
        The injection pages stay (the same processes are checkpointed next), and it may be
        called from any thread."""
        self.close(release_pages=False)
        self.parent = None


class Pending:
    """A capture whose pages and blobs are still to be stored: copied into memory inside
    the stop, or still in fork snapshots (see capture_snapshot)."""

    def __init__(self, inc: Incremental, tree: TreeCapture):
        self.inc, self.tree, self.writer = inc, tree, tree.writer

    @property
    def snapshots(self) -> list[Snapshot]:
        return self.tree.copy.snapshots

    @property
    def copied(self) -> list[tuple[int, int, bytes]]:
        """(ns pid, address, pages) read while frozen, not yet stored."""
        return self.tree.copied()

    def complete(self) -> ChunkId:
        try:
            self.tree.store_metadata()
            self.writer.add_runs(self.tree.runs())
        except BaseException:
            self.tree.drop()
            raise
        self.tree.after_thaw(self.writer.add_pages)
        self.inc.parent = self.writer.finish(self.tree.processes, self.tree.file_records)
        self.inc.last_pages = self.writer.pages
        return self.inc.parent
