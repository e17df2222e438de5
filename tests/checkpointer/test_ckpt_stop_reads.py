"""What the stop no longer reads, because it cannot have changed: each shortcut with the
case that would catch it stale. A process's thread count (one stat of /proc/PID/task) stands
for a second listing of its threads."""
from __future__ import annotations

import os

from checkpointer import freeze, procfs
from ckpt_helpers import ok_lines, wait_for


def _running(pid: int, held: set[int]) -> list[str]:
    """The tasks of `pid` that are not `held` and still alive, with their states."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            state = procfs.stat_fields(int(tid))[2]
        except procfs.ProcessGone:
            continue
        if int(tid) not in held and state not in ("Z", "X"):
            found.append(f"{tid}: {state}")
    return found


def test_a_thread_made_while_its_process_is_being_frozen_is_frozen_too(procs, binaries, tmp_path):
    """The freeze stops the threads it lists, then compares the kernel's thread count with
    the threads it holds: a thread made between the listing and the stop of its maker is
    counted, and frozen after a second listing."""
    out = tmp_path / "churn.out"
    proc = procs.start([str(binaries / "thread_churn"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the target to make threads")
    for _ in range(40):
        with freeze([proc.pid]) as frozen:
            held = set(frozen.processes[proc.pid].threads)
            assert not _running(proc.pid, held), "threads left running in a freeze"
            assert procfs.thread_count(proc.pid) == len(held)
    made = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) > made, "the target to make threads after the thaws")

