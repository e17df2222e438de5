"""Tracked mappings are scanned for written pages in one PAGEMAP_SCAN per span of them,
holes and untracked mappings between included (DirtyTracker.scan_runs): the pages written
in each mapping land in its image, two touching mappings written at their border each
keep their own page, a mapping behind a hole is in the same scan, and a mapping unmapped
and mapped again at the same place (same signature, no longer tracked) among them is
stored as it is, without losing the pages written in its neighbours.
Pre-copies (Incremental.precopy) of pages written again are dropped by the scan result
of their own mapping.
Each test runs three times: with the scan in the tracer thread, and shared with a worker on
the other CPU in pieces (sharedscan.py: pieces cut through mappings and through runs of
written pages, taken by both threads, joined in address order): the copier's Python worker
in pieces of 3 pages, or the native worker (its PAGEMAP_SCANs with room for one range each,
so that every piece holding more is scanned on from where its walk ended)."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

from checkpointer import files, freeze, incremental, load_image, procfs, sharedscan
from checkpointer.incremental import DirtyTracker, Incremental
from checkpointer.kernel import PAGE_SIZE
from ckpt_helpers import pagemap_fds

PAGES = 8     # per region (targets/mapping_runs.py)
FIRST = {(region, page): region * 1000 + page for region in range(4) for page in range(PAGES)}   # as started


def _words(store, root, pid: int, starts: list[int]) -> dict[tuple[int, int], int]:
    """(region, page) -> the 8 bytes at the page's start, in an image."""
    words = {}
    for addr, data in load_image(store, root).page_runs(pid):
        for at in range(0, len(data), PAGE_SIZE):
            for region, start in enumerate(starts):
                if start <= addr + at < start + PAGES * PAGE_SIZE:
                    words[region, (addr + at - start) // PAGE_SIZE] = struct.unpack_from("Q", data, at)[0]
    return words


@pytest.fixture(params=["tracer", "shared", "native"], autouse=True)
def shared(request, monkeypatch) -> list[int]:
    """Where the scans run ("shared", "native": every one shared in pieces); the number
    of shared scans made is appended to the list given."""
    made: list[int] = []
    if request.param != "tracer":
        if len(os.sched_getaffinity(0)) < 2:
            pytest.skip("a shared scan needs a second CPU")
        monkeypatch.setattr(incremental, "SHARED_SCAN_BYTES", 0)
        if request.param == "shared":
            monkeypatch.setattr(incremental, "SCAN_PIECE_BYTES", 3 * PAGE_SIZE)
            monkeypatch.setattr(sharedscan._NativePieces, "submit", lambda self, cpus: False)
            original = sharedscan.SharedScan.start

            def counted(self, cpus):
                made.append(1)
                return original(self, cpus)
            monkeypatch.setattr(sharedscan.SharedScan, "start", counted)
        else:
            monkeypatch.setattr(incremental, "SCAN_PIECE_BYTES", 32 * PAGE_SIZE)   # under CAPACITY pieces
            monkeypatch.setattr(procfs, "RANGES_PER_SCAN", 1)
            _on_native_pieces(monkeypatch, lambda pieces: made.append(1))
        made.append(0)
    return made


def _on_native_pieces(monkeypatch, seen) -> None:
    """`seen(pieces)` for each shared scan the native worker takes from now on."""
    submit = sharedscan._NativePieces.submit

    def watched(self, cpus):
        taken = submit(self, cpus)
        if taken:
            seen(self._pieces)
        return taken
    monkeypatch.setattr(sharedscan._NativePieces, "submit", watched)


@pytest.fixture
def target(procs):
    """The mapping_runs target: (process, region addresses, send(command))."""
    proc = procs.python("mapping_runs.py", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    starts = [int(word, 16) for word in proc.stdout.readline().split()]

    def send(*words) -> None:
        proc.stdin.write(" ".join(map(str, words)) + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
    return proc, starts, send


def _scans(monkeypatch) -> list[tuple[int, int]]:
    """The (start, end) of every written-page scan made from now on (the native worker's pieces too)."""
    scans: list[tuple[int, int]] = []
    _on_native_pieces(monkeypatch, scans.extend)
    scan_range = DirtyTracker._scan_range

    def counted(self, pagemap, start, end, **kwargs):
        scans.append((start, end))
        return scan_range(self, pagemap, start, end, **kwargs)
    monkeypatch.setattr(DirtyTracker, "_scan_range", counted)
    return scans


def _capture(inc: Incremental, pid: int, store):
    with freeze([pid], tree=True) as frozen:
        return inc.capture(frozen, store)


def _one_scan_covers(scans: list[tuple[int, int]], starts: list[int], shared: list[int]) -> bool:
    """Whether one scan covered regions 0-3 (tracked mappings, a hole before region 3),
    or (`shared` scans made) pieces scanned one after the other did."""
    first, end = starts[0], starts[3] + PAGES * PAGE_SIZE
    if not shared:
        return any(start <= first and end <= stop for start, stop in scans)
    at = first
    for start, stop in sorted(scans):
        if start <= at < stop:
            at = stop
    return sum(shared) > 0 and at >= end and len(scans) > 4


def test_writes_in_a_run_of_mappings_land_in_their_own_mapping(target, store, monkeypatch, shared):
    proc, starts, send = target
    inc = Incremental()
    try:
        full = _capture(inc, proc.pid, store)
        send(0, PAGES - 1, 11)         # the last page of region 0 and the first of region 1,
        send(1, 0, 12)                 # which touch: one range for the kernel
        send(2, 3, 13)
        send(3, PAGES - 1, 14)
        assert inc.precopy(min_pages=0) > 0   # copied ahead, then written again: each pre-copy
        send(0, PAGES - 1, 41)                # must be dropped by its own mapping's scan result
        send(1, 0, 42)
        scans = _scans(monkeypatch)
        incremental = _capture(inc, proc.pid, store)
    finally:
        inc.close()
    assert _words(store, full, proc.pid, starts) == FIRST
    assert _words(store, incremental, proc.pid, starts) == FIRST | {
        (0, PAGES - 1): 41, (1, 0): 42, (2, 3): 13, (3, PAGES - 1): 14}
    assert _one_scan_covers(scans, starts, shared), scans


@pytest.mark.parametrize("planned", [False, True])
def test_a_mapping_made_again_inside_a_run_is_stored_whole_and_its_neighbours_keep_their_writes(
        target, store, monkeypatch, shared, planned):
    """`planned`: a pre-copy before the remapping plans the stop's scan over the mappings
    as armed (DirtyTracker.plan_scan: a shared scan then begins first thing in the stop)."""
    proc, starts, send = target
    inc = Incremental()
    try:
        _capture(inc, proc.pid, store)
        send(0, 2, 21)                 # before the remade mapping in the run: scanned first
        if planned:
            inc.precopy(min_pages=0)
        send(2, 1, 22)
        send("remap", 1, 500)          # same place, same signature, not tracked any more
        send(3, 5, 23)
        second = _capture(inc, proc.pid, store)
        send(0, 4, 31)                 # all four tracked again
        if planned:
            inc.precopy(min_pages=0)
        send(1, 6, 32)
        scans = _scans(monkeypatch)
        third = _capture(inc, proc.pid, store)
    finally:
        inc.close()
    remade = {(1, page): 1000 + page + 500 for page in range(PAGES)}
    assert _words(store, second, proc.pid, starts) == FIRST | remade | {(0, 2): 21, (2, 1): 22, (3, 5): 23}
    assert _words(store, third, proc.pid, starts) == FIRST | remade | {(0, 2): 21, (2, 1): 22, (3, 5): 23,
                                                                       (0, 4): 31, (1, 6): 32}
    assert _one_scan_covers(scans, starts, shared), scans     # all tracked again, in their run


def test_a_mapping_made_again_and_left_untouched_is_stored_as_zeros_not_as_the_old_one(target, store):
    """The new mapping has no page in: a scan of what is written there finds nothing, yet
    the image must not keep the old mapping's pages at that place."""
    proc, starts, send = target
    inc = Incremental()
    try:
        _capture(inc, proc.pid, store)
        send(0, 1, 51)
        send("remap", 2, "-")           # same place, same signature, not tracked, nothing in
        send(3, 2, 53)
        second = _capture(inc, proc.pid, store)
    finally:
        inc.close()
    words = _words(store, second, proc.pid, starts)
    assert all(words.get((2, page), 0) == 0 for page in range(PAGES)), words
    assert words[0, 1] == 51 and words[3, 2] == 53


def test_the_fds_are_read_while_a_shared_scan_goes_on_and_after_the_pages_are_chosen_otherwise(
        target, store, monkeypatch, shared):
    """A shared scan (a large process) is asked for its pages only once the fds are read,
    so that it overlaps with them too; without one the pages are chosen first, so that
    their copy on the other CPU overlaps with the fds. Either way the fds are in the image.
    After a pre-copy, the shared scan begins first thing in the stop, over the mappings armed
    at the last checkpoint (DirtyTracker.plan_scan, start_scan), before the memory map is read."""
    proc, starts, send = target
    events: list[str] = []
    inc = Incremental()
    try:
        _capture(inc, proc.pid, store)
        send(0, 1, 61)
        inc.precopy(min_pages=0)
        send(0, 2, 62)
        select, fd_records = DirtyTracker.select, files.FileCapture.fd_records
        read_maps, start = procfs._read_maps, sharedscan.SharedScan.start
        monkeypatch.setattr(DirtyTracker, "select", lambda self, vma: events.append("pages") or select(self, vma))
        monkeypatch.setattr(files.FileCapture, "fd_records",
                            lambda self, pid: events.append("fds") or fd_records(self, pid))
        monkeypatch.setattr(procfs, "_read_maps", lambda pid: events.append("maps") or read_maps(pid))
        monkeypatch.setattr(sharedscan.SharedScan, "start",
                            lambda self, cpus: events.append("scan") or start(self, cpus))
        second = _capture(inc, proc.pid, store)
    finally:
        inc.close()
    if sum(shared):
        assert events[:2] == ["scan", "maps"] and events.index("fds") < events.index("pages"), events
    else:
        assert "scan" not in events and events.index("pages") < events.index("fds"), events
    record = next(p for p in load_image(store, second).processes if p["host_pid"] == proc.pid)
    assert {fd["fd"] for fd in record["fds"]} >= {0, 1, 2}
    words = _words(store, second, proc.pid, starts)
    assert (words[0, 1], words[0, 2]) == (61, 62)


def test_a_scan_planned_before_a_freeze_and_never_started_is_let_go(target, store, shared):
    """A pre-copy makes the next stop's shared scan ready (its own pagemap descriptor): a
    second pre-copy before that stop, and the end of the checkpoints, let it go."""
    proc, starts, send = target
    before = pagemap_fds()
    inc = Incremental()
    try:
        _capture(inc, proc.pid, store)
        for value in (71, 72, 73):
            send(0, 3, value)
            inc.precopy(min_pages=0)
        assert pagemap_fds() == before + 1 + bool(shared)    # the tracker's own, one plan (shared scans)
        second = _capture(inc, proc.pid, store)
        inc.precopy(min_pages=0)
    finally:
        inc.close()
    assert pagemap_fds() == before
    assert _words(store, second, proc.pid, starts)[0, 3] == 73


def test_a_scan_is_planned_from_as_many_tracked_bytes_as_sharing_takes(target, store, monkeypatch):
    """A pre-copy plans the next stop's shared scan when the tracked mappings hold
    SHARED_SCAN_BYTES or more, not when they hold a page less (plan_scan settles most
    processes by the armed mappings' extents before it looks at the map)."""
    proc, _, _ = target
    inc = Incremental()
    try:
        _capture(inc, proc.pid, store)
        tracker = inc.trackers[proc.pid]
        tracked = sum(vma.end - vma.start for vma in tracker._armed_vmas if vma.signature in tracker.armed)
        assert tracked > 0
        for threshold, planned in ((tracked + PAGE_SIZE, False), (tracked, True)):
            monkeypatch.setattr(incremental, "SHARED_SCAN_BYTES", threshold)
            tracker.plan_scan()
            assert (tracker._planned is not None) is planned, threshold
    finally:
        inc.close()
