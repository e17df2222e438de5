"""The stop of a checkpoint: tracer and tasks share one CPU while frozen (and get their
CPU affinity back), the stop is broken down into named phases, and pages copied inside
the stop are stored after the thaw."""
from __future__ import annotations

import gc
import os

import pytest

import checkpointer
from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental
from checkpointer.stopwatch import recording
from ckpt_helpers import assert_unbroken, ok_lines, wait_for

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


def _tids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs to see a pinning")
def test_freeze_pins_tasks_to_our_cpu_and_the_thaw_gives_their_affinity_back(procs, binaries, tmp_path):
    out = tmp_path / "threads.out"
    proc = procs.start([str(binaries / "threads"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the threads target to run")
    mine = os.sched_getaffinity(0)
    theirs = {max(mine)}
    tids = _tids(proc.pid)
    assert len(tids) == 5
    for tid in tids:
        os.sched_setaffinity(tid, theirs)
    policy = os.sched_getscheduler(0)
    with freeze([proc.pid]) as frozen:
        cpu = frozen.pinning.cpu
        assert os.sched_getaffinity(0) == {cpu}
        assert {tid: os.sched_getaffinity(tid) for tid in tids} == {tid: {cpu} for tid in tids}
        assert os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_RR  # the tracer, while frozen
    assert os.sched_getaffinity(0) == mine
    assert os.sched_getscheduler(0) == policy
    assert {tid: os.sched_getaffinity(tid) for tid in tids} == {tid: theirs for tid in tids}
    size = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= size + 20, "the target to run on after the thaw")
    assert assert_unbroken(out, proc.pid) >= size + 20


def test_stop_phases_are_timed_and_pages_copied_in_the_stop_are_stored_after_it(procs, store, binaries,
                                                                                  tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out), "8"])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the counter to run")
    inc = Incremental()
    try:
        for round_ in range(2):  # a full capture, then an incremental one
            with recording() as phases:
                with freeze([proc.pid]) as frozen:
                    pending = inc.capture_snapshot(frozen, store)
            assert {"freeze", "thaw", "proc_files", "fds", "signals_threads_injected", "page_scan",
                    "arm_tracking"} <= set(phases), phases
            assert all(ms >= 0 for ms in phases.values())
            if round_:  # a few written pages: read inside the stop, no fork snapshot
                assert pending.copied and not pending.snapshots
            root = pending.complete()
            assert pending.copied == [] and inc.last_pages > 0
    finally:
        inc.close()
    assert load_image(store, root).page_count() >= 8 * 256
    procs.kill(proc)
    size = len(ok_lines(out))
    restored = checkpointer.restore(store, root)
    procs.restored.append(restored)
    # the counter checks a new 64 KiB slice of its heap per line: 130 lines check it all
    wait_for(lambda: len(ok_lines(out)) >= size + 130, "the restored counter to check its heap")
    assert assert_unbroken(out, proc.pid) >= size + 130


def test_no_garbage_collection_runs_inside_a_stop(procs, binaries, tmp_path):
    """The cyclic collector is off while processes are frozen (a collection the stop's
    allocations trigger runs after the thaw), back on after, and a freeze inside another
    one leaves it off until the outer one ends."""
    outs = [tmp_path / "counter1.out", tmp_path / "counter2.out"]
    first, second = [procs.start([str(binaries / "counter"), str(out), "8"]) for out in outs]
    wait_for(lambda: all(out.exists() and len(ok_lines(out)) >= 5 for out in outs), "the counters to run")
    assert gc.isenabled()
    collections: list[int] = []
    gc.callbacks.append(lambda phase, info: collections.append(info["generation"]) if phase == "start" else None)
    try:
        with freeze([first.pid]):
            assert not gc.isenabled()
            gc.collect()            # (an explicit collection still runs: only the automatic ones wait)
            collections.clear()
            garbage = [[i] for i in range(50000)]       # far past the young generation's threshold
            assert collections == [] and garbage
            with freeze([second.pid]):
                pass
            assert not gc.isenabled()
        assert gc.isenabled()
    finally:
        gc.callbacks.pop()
