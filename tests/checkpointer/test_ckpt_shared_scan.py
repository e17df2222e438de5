"""The stop's written-page scan shared with the other CPU (checkpointer/sharedscan.py): the
pieces cover every tracked byte of the spans, each piece is scanned once by whichever
thread takes it, the result holds every piece's pages in address order whoever scanned
them, and an error is raised (not a partial result) with the pagemap descriptor closed
once neither thread uses it. Given the scan's PAGEMAP_SCAN mask and flags, the native
worker's scans give what the tracer's own would, a piece with more ranges than one
PAGEMAP_SCAN holds included. The scans of real processes through it are in
test_ckpt_scan_runs.py (its "shared" runs)."""
from __future__ import annotations

import ctypes
import mmap
import os
import threading
import time

import pytest

from checkpointer import procfs
from checkpointer.errors import CheckpointError
from checkpointer.kernel import PAGE_SIZE
from checkpointer.sharedscan import SharedScan, pieces
from ckpt_helpers import pagemap_fds

MIB = 1 << 20


def _vma(start: int, end: int) -> procfs.Vma:
    return procfs.Vma(start, end, "rw-p", 0, 0, "")


def _other_cpus() -> set[int]:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    return cpus - {min(cpus)}


def test_pieces_cut_large_mappings_and_cover_every_span():
    base = 1 << 30
    big, small, after_hole = _vma(base, base + 10 * MIB), _vma(base + 10 * MIB, base + 11 * MIB), \
        _vma(base + 20 * MIB, base + 23 * MIB)
    spans = [(big.start, after_hole.end, [big, small, after_hole]), (1 << 40, (1 << 40) + MIB, [])]
    found = pieces(spans, 4 * MIB)
    assert found[0][0] == big.start and found[-1][1] == after_hole.end
    assert all(end == start for (_, end), (start, _) in zip(found, found[1:])), "a gap or an overlap"
    tracked = [sum(min(end, v.end) - max(start, v.start) for v in (big, small, after_hole) if v.start < end
                   and start < v.end) for start, end in found]
    assert tracked[:-1] == [4 * MIB] * (len(found) - 1) and 0 < tracked[-1] <= 4 * MIB, tracked
    assert all(start % PAGE_SIZE == 0 for start, _ in found)


def test_every_piece_is_in_the_result_in_address_order_whoever_scanned_it():
    cpus = _other_cpus()
    scanned_by: dict[int, str] = {}

    def scan(fd: int, start: int, end: int, regions) -> procfs.PageRanges:
        assert os.readlink(f"/proc/self/fd/{fd}") == f"/proc/{os.getpid()}/pagemap"
        scanned_by[start] = threading.current_thread().name
        time.sleep(0.002)
        return [(start, start + PAGE_SIZE), (end - PAGE_SIZE, end)]
    parts = [(n * MIB, (n + 1) * MIB) for n in range(1, 41)]
    shared = SharedScan(os.getpid(), parts, scan).start(cpus)
    time.sleep(0.02)               # the worker takes the first pieces meanwhile
    ranges = shared.result()
    assert ranges == [span for start, end in parts for span in ((start, start + PAGE_SIZE), (end - PAGE_SIZE, end))]
    assert sorted(scanned_by) == [start for start, _ in parts], "a piece scanned twice or not at all"
    assert len(set(scanned_by.values())) == 2, scanned_by     # both threads took pieces
    assert pagemap_fds() == 0


def test_an_error_in_any_piece_is_raised_and_the_descriptor_closed_after_both_threads_stop():
    cpus = _other_cpus()
    before = pagemap_fds()

    def scan(fd: int, start: int, end: int, regions) -> procfs.PageRanges:
        time.sleep(0.002)
        if start == 7 * MIB:
            raise OSError(14, "Bad address")
        return [(start, end)]
    shared = SharedScan(os.getpid(), [(n * MIB, (n + 1) * MIB) for n in range(1, 30)], scan).start(cpus)
    with pytest.raises(OSError):
        shared.result()
    assert pagemap_fds() == before
    shared = SharedScan(os.getpid(), [(n * MIB, (n + 1) * MIB) for n in range(1, 30)], scan).start(cpus)
    shared.cancel()               # a failed capture: nothing asked of it, its error not raised
    assert pagemap_fds() == before


def _present(fd: int, start: int, end: int, regions=None) -> procfs.PageRanges:
    return [(first, last) for first, last, _ in procfs.page_ranges(fd, start, end, procfs.PAGE_IS_PRESENT,
                                                                   regions=regions)]


def test_the_native_workers_scans_give_what_the_tracers_own_scan_gives():
    cpus = _other_cpus()
    memory = mmap.mmap(-1, 8 * MIB)
    try:
        for at in range(0, 8 * MIB, 2 * PAGE_SIZE):     # every other page: 1,024 ranges
            memory[at] = 1
        base = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        with open(f"/proc/{os.getpid()}/pagemap", "rb", buffering=0) as pagemap:
            expected = _present(pagemap.fileno(), base, base + 8 * MIB)
        assert len(expected) == 1024
        parts = [(base, base + 5 * MIB), (base + 5 * MIB, base + 6 * MIB), (base + 6 * MIB, base + 8 * MIB)]
        for _ in range(20):     # (each piece scanned by whichever thread claims it)
            shared = SharedScan(os.getpid(), parts, _present, native=(procfs.PAGE_IS_PRESENT, 0)).start(cpus)
            assert shared._native is not None, "the native worker did not take the scan"
            assert shared.result() == expected      # the first piece: 640 ranges, more than one scan holds
    finally:
        memory.close()
    assert pagemap_fds() == 0


def test_a_native_scans_error_is_raised_and_the_descriptor_closed():
    cpus = _other_cpus()
    before = pagemap_fds()
    parts = [(MIB, 2 * MIB), (2 * MIB + 1, 3 * MIB), (3 * MIB, 4 * MIB)]    # the second: not page-aligned
    shared = SharedScan(os.getpid(), parts, _present, native=(procfs.PAGE_IS_PRESENT, 0)).start(cpus)
    with pytest.raises(CheckpointError, match="PAGEMAP_SCAN of process .* failed: Invalid argument"):
        shared.result()
    assert pagemap_fds() == before
    SharedScan(os.getpid(), parts, _present, native=(procfs.PAGE_IS_PRESENT, 0)).start(cpus).cancel()
    assert pagemap_fds() == before
