"""What may get in the way of the system calls a checkpoint runs inside a process.

Job control: a stop signal that arrives while they run is held, not an error, and the
process ends up as its job control last asked (stopped if the stop came last, running if a
SIGCONT followed)."""
from __future__ import annotations

import checkpointer

from ckpt_helpers import assert_unbroken, children_of, ok_lines, wait_for

CHECKPOINTS = 40


def test_a_child_stopped_and_continued_in_a_loop_is_checkpointed_again_and_again(procs, store, tmp_path):
    out = tmp_path / "loop.out"
    proc = procs.python("stop_cont_loop.py", str(out))
    mine = tmp_path / "loop.out.child"
    wait_for(lambda: out.exists() and mine.exists() and len(ok_lines(out)) >= 20, "the job control loop to run")
    [child] = children_of(proc.pid)
    for i in range(CHECKPOINTS):
        checkpointer.checkpoint([child], store, f"loop{i}")
    loops, lines = len(ok_lines(out)), len(ok_lines(mine))
    # a stop signal lost by a checkpoint leaves the parent waiting for ever for its child to stop
    wait_for(lambda: len(ok_lines(out)) >= loops + 100, "the parent's loop to go on after the checkpoints",
             timeout=30)
    wait_for(lambda: len(ok_lines(mine)) >= lines + 100, "the child to run on", timeout=30)
    assert assert_unbroken(out, proc.pid) >= loops + 100
    assert assert_unbroken(mine, child) >= lines + 100

