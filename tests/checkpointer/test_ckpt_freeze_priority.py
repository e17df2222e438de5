"""While frozen, the tasks run real-time (SCHED_RR: freeze._boost: a task waiting for a CPU on a
busy machine would otherwise delay its own stop and every injected call), yet what a user
sees of their scheduling is unchanged: after the thaw each thread has its own policy and
nice value back, the image records the policy the process had (not the freeze's), and a
restored process gets that one."""
from __future__ import annotations

import os

import checkpointer
from checkpointer import freeze, load_image
from ckpt_helpers import ok_lines, wait_for


def _tids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def test_threads_get_their_own_scheduling_back_and_the_image_keeps_it(procs, store, binaries, tmp_path):
    out = tmp_path / "threads.out"
    proc = procs.start([str(binaries / "threads"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the threads target to run")
    tids = _tids(proc.pid)
    main, other = tids[0], tids[1:]
    os.sched_setscheduler(main, os.SCHED_BATCH | os.SCHED_RESET_ON_FORK, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, main, 7)
    os.sched_setscheduler(other[0], os.SCHED_IDLE, os.sched_param(0))
    before = {tid: (os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)) for tid in tids}
    with freeze([proc.pid]):
        assert {tid: os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK for tid in tids} == \
            {tid: os.SCHED_RR for tid in tids}
    assert {tid: (os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)) for tid in tids} == before

    checkpointer.checkpoint([proc.pid], store, "sched")
    assert {tid: (os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)) for tid in tids} == before
    meta = load_image(store, "sched").processes[0]
    assert meta["sched"] == [os.SCHED_BATCH | os.SCHED_RESET_ON_FORK, 0, 7]
    procs.kill(proc)
    restored = checkpointer.restore(store, "sched")
    procs.restored.append(restored)
    pid = restored.pids[0]
    assert os.sched_getscheduler(pid) == os.SCHED_BATCH | os.SCHED_RESET_ON_FORK
    assert os.getpriority(os.PRIO_PROCESS, pid) == 7


def test_a_real_time_thread_keeps_its_own_priority(procs, store, binaries, tmp_path):
    out = tmp_path / "threads.out"
    proc = procs.start([str(binaries / "threads"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the threads target to run")
    os.sched_setscheduler(proc.pid, os.SCHED_RR, os.sched_param(3))
    with freeze([proc.pid]):
        assert os.sched_getscheduler(proc.pid) == os.SCHED_RR
        assert os.sched_getparam(proc.pid).sched_priority == 3
    checkpointer.checkpoint([proc.pid], store, "rt")
    assert load_image(store, "rt").processes[0]["sched"][:2] == [os.SCHED_RR, 3]
    assert os.sched_getscheduler(proc.pid) == os.SCHED_RR
