"""A SCHED_DEADLINE task (a control loop, an audio engine) comes back with its runtime,
deadline and period: sched_setscheduler cannot set that policy, and the restore failed
on it as a whole (EINVAL; stress-ng --schedpolicy)."""
from __future__ import annotations

import os

import checkpointer
from checkpointer import kernel
from ckpt_helpers import restored_goes_on, wait_for, ok_lines

PARAMETERS = [0, 2_000_000, 10_000_000, 10_000_000]     # flags, runtime, deadline, period (ns)


def test_a_deadline_task_keeps_its_policy_and_parameters(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out), "1"])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the counter to run")
    kernel.set_sched_deadline(proc.pid, kernel.SCHED_DEADLINE, PARAMETERS)
    checkpointer.checkpoint([proc.pid], store, "deadline")
    procs.kill(proc)
    restored = restored_goes_on(procs, store, "deadline", out)
    pid = restored.pids[0]
    assert os.sched_getscheduler(pid) == kernel.SCHED_DEADLINE
    assert kernel.sched_deadline(pid) == PARAMETERS
