"""The VmFlags of a mapping made between two checkpoints (smaps: a read that walks every
page table of the process, 1-2 ms for a Redis) are read before the freeze, by
Incremental.precopy, not in the stop; the image records them all the same. A mapping made
after that read, just before the freeze, is still read in the stop, and so is one that
precopy passes over because the process's size did not move (procfs.note_new_vm_flags)."""
from __future__ import annotations

import subprocess

import pytest

from checkpointer import freeze, load_image, procfs
from checkpointer.incremental import Incremental

MADV_DONTDUMP, MADV_WIPEONFORK = 16, 18


@pytest.fixture
def target(procs):
    """(process, map(pages, advice) -> the new mapping's address)."""
    proc = procs.python("advise_on_demand.py", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"

    def map_advised(pages: int, advice: int, replacing: int | None = None) -> int:
        proc.stdin.write(f"map {pages} {advice}\n" if replacing is None else f"replace {pages} {advice} {replacing:x}\n")
        proc.stdin.flush()
        return int(proc.stdout.readline(), 16)
    return proc, map_advised


@pytest.fixture
def smaps_reads(monkeypatch) -> list[int]:
    """The pids whose smaps is read from now on."""
    reads: list[int] = []
    read = procfs._read_vm_flags

    def counted(pid: int):
        reads.append(pid)
        return read(pid)
    monkeypatch.setattr(procfs, "_read_vm_flags", counted)
    return reads


def _capture(inc: Incremental, pid: int, store, reads: list[int] | None = None):
    with freeze([pid], tree=True) as frozen:
        before = len(reads) if reads is not None else 0
        pending = inc.capture_snapshot(frozen, store)
        in_stop = (len(reads) - before) if reads is not None else 0
    return pending.complete(), in_stop


def _flags_at(store, root, pid: int, address: int) -> list[str]:
    [vma] = [v for v in load_image(store, root).processes[0]["vmas"] if v["start"] == address]
    assert load_image(store, root).processes[0]["host_pid"] == pid
    return vma.get("vm_flags", [])


def test_flags_of_a_mapping_made_between_checkpoints_are_read_before_the_freeze(target, store, smaps_reads):
    proc, map_advised = target
    inc = Incremental()
    try:
        _capture(inc, proc.pid, store)
        smaps_reads.clear()            # (the first capture's own read)
        dontdump = map_advised(16, MADV_DONTDUMP)
        inc.precopy()
        assert smaps_reads == [proc.pid], "precopy did not read the new mapping's flags"
        root, in_stop = _capture(inc, proc.pid, store, smaps_reads)
        assert in_stop == 0, "the stop read smaps again"
        assert _flags_at(store, root, proc.pid, dontdump) == ["dontdump"]
        inc.precopy()
        assert smaps_reads == [proc.pid], "smaps read again with no mapping made since"
    finally:
        inc.close()


def test_a_mapping_made_after_the_precopy_gets_its_flags_in_the_stop(target, store, smaps_reads):
    proc, map_advised = target
    inc = Incremental()
    try:
        _capture(inc, proc.pid, store)
        inc.precopy()
        wiped = map_advised(4, MADV_WIPEONFORK)        # between the pre-copy and the freeze
        root, in_stop = _capture(inc, proc.pid, store, smaps_reads)
    finally:
        inc.close()
    assert in_stop == 1
    assert _flags_at(store, root, proc.pid, wiped) == ["wipeonfork"]


def test_a_mapping_replaced_by_one_of_its_size_gets_its_flags_in_the_stop(target, store, smaps_reads, monkeypatch):
    """With the process's size and data as they were, precopy reads neither its maps nor
    its smaps; a mapping made meanwhile in place of another of its size (another address,
    other advice) is found by the stop, which records its flags."""
    proc, map_advised = target
    maps_reads: list[int] = []
    read_maps = procfs._read_maps
    monkeypatch.setattr(procfs, "_read_maps", lambda pid: maps_reads.append(pid) or read_maps(pid))
    inc = Incremental()
    try:
        dontdump = map_advised(16, MADV_DONTDUMP)
        _capture(inc, proc.pid, store)
        inc.precopy()
        root, _ = _capture(inc, proc.pid, store)
        assert _flags_at(store, root, proc.pid, dontdump) == ["dontdump"]
        smaps_reads.clear()
        maps_reads.clear()
        inc.precopy()
        assert maps_reads == [] and smaps_reads == [], "precopy looked at a process whose size did not move"
        wiped = map_advised(16, MADV_WIPEONFORK, replacing=dontdump)
        inc.precopy()
        assert smaps_reads == [], "the replacement moved the process's size"
        root, in_stop = _capture(inc, proc.pid, store, smaps_reads)
    finally:
        inc.close()
    assert in_stop == 1
    assert wiped != dontdump and _flags_at(store, root, proc.pid, wiped) == ["wipeonfork"]
    assert not [v for v in load_image(store, root).processes[0]["vmas"] if v["start"] == dontdump]
