"""A checkpointer SIGKILLed inside a stop leaves the application's scheduling as it was:
inside the stop its threads run real-time (SCHED_RR) and pinned to one CPU (freeze._boost,
pinning.py); the tracer's watchdog (watchdog.py) gives each thread its own policy, nice
value and CPU affinity back once the tracer is dead. Without it a CPU-bound thread would
keep up to 95% of one CPU for ever."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ckpt_helpers import ok_lines, wait_for

TRACER = """
import ctypes, os, signal, sys, threading, time
from checkpointer import freeze, watchdog
if sys.argv[2] == "replaced":       # the first watchdog was killed (by someone) before the stop
    watchdog.start()
    os.kill(watchdog._table.process.pid, signal.SIGKILL)
    watchdog._table.process.wait()

def stop():
    with freeze([int(sys.argv[1])], tree=True):
        print("frozen", threading.get_native_id(), flush=True)
        time.sleep(600)

if sys.argv[2] == "left-behind":    # the main thread exits, the tracing thread does not
    threading.Thread(target=stop, daemon=True).start()
    time.sleep(1)
    ctypes.CDLL(None).syscall(60, 0)    # exit(2): this thread alone, as SIGKILL ends it first
stop()
"""


def _tids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def _scheduling(tids: list[int]) -> dict[int, tuple[int, int, set[int]]]:
    return {tid: (os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid), os.sched_getaffinity(tid))
            for tid in tids}


@pytest.mark.parametrize("watchdog", ["first", "replaced", "left-behind"])
def test_a_tracer_killed_inside_a_stop_leaves_the_threads_their_own_scheduling(procs, binaries, tmp_path, watchdog):
    """left-behind: the tracer's main thread exits while its tracing thread stays (as a
    SIGKILL leaves one busy in the kernel, which may then never end: see watchdog.py):
    the watchdog acts at once, and puts that thread back to SCHED_OTHER."""
    out = tmp_path / "threads.out"
    proc = procs.start([str(binaries / "threads"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the threads target to run")
    main, *others = _tids(proc.pid)
    os.sched_setscheduler(main, os.SCHED_BATCH | os.SCHED_RESET_ON_FORK, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, main, 5)
    os.sched_setscheduler(others[0], os.SCHED_IDLE, os.sched_param(0))
    os.sched_setaffinity(others[1], {max(os.sched_getaffinity(0))})
    before = _scheduling([main, *others])

    tracer = subprocess.Popen([sys.executable, "-c", TRACER, str(proc.pid), watchdog], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        word, tracing = tracer.stdout.readline().split()
        assert word == "frozen", "the tracer did not freeze the target"
        assert os.sched_getscheduler(int(tracing)) & ~os.SCHED_RESET_ON_FORK == os.SCHED_RR
        inside = _scheduling(before)
        # the situation under test: every thread raised and pinned by the stop
        assert {tid: policy & ~os.SCHED_RESET_ON_FORK for tid, (policy, _, _) in inside.items()} == \
            {tid: os.SCHED_RR for tid in before}
        assert all(len(cpus) == 1 for _, _, cpus in inside.values()) and len({min(c) for *_, c in inside.values()}) == 1
        if watchdog == "left-behind":
            wait_for(lambda: _scheduling(before) == before, "the threads' own scheduling to come back", timeout=10)
            assert os.sched_getscheduler(int(tracing)) == os.SCHED_OTHER, "the tracing thread left real-time"
    finally:
        tracer.send_signal(signal.SIGKILL)
        tracer.wait()
        tracer.stdout.close()
    wait_for(lambda: _scheduling(before) == before, "the threads' own scheduling to come back", timeout=10)
    size = out.stat().st_size
    wait_for(lambda: out.stat().st_size > size + 100, "the target to go on")
    assert not [line for line in ok_lines(out) if "BAD" in line]
