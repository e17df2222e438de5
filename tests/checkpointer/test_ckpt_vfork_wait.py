"""A process inside vfork() for a moment (a shell loop's vfork child about to exec) is
waited for by the freeze, not refused (checkpointer/freeze.py, VFORK_WAIT_S); one whose
child never execs is still refused (test_ckpt_attributes)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import checkpointer
from ckpt_helpers import wait_for


def test_a_parent_briefly_inside_vfork_is_checkpointed(procs, store, binaries, tmp_path):
    out = tmp_path / "vfork_loop.out"
    proc = procs.start([str(binaries / "vfork_loop"), str(out)])
    wait_for(lambda: out.exists() and out.read_text() == "ready", "the vfork loop to run")
    for i in range(10):          # the parent is inside vfork() about 2/3 of the time
        checkpointer.checkpoint([proc.pid], store, f"loop-{i}", durable=False)
    assert len(checkpointer.images(store)) == 10


def test_children_made_with_clone_ptrace_during_a_freeze_in_a_thread_are_let_go(procs, store, binaries,
                                                                                 tmp_path):
    """The daemon freezes from a thread of its own (slsfs/tracer.py), and ptrace is per
    thread: a child the kernel attached to that thread (CLONE_PTRACE by a seized parent) is
    ours, not a debugger's. It must be let go, else its vfork parent waits for it as long as
    that thread lives, and later checkpoints fail on it (stress-ng --clone in a group never
    ended, its checkpoints failing 'already traced by a debugger')."""
    out = tmp_path / "vfork_ptrace_loop.out"
    proc = procs.start([str(binaries / "vfork_ptrace_loop"), str(out), "20000"])
    wait_for(lambda: out.exists() and out.read_text() == "ready", "the clone loop to run")
    failures: list[str] = []

    def checkpoints_then_exit_status() -> int:
        for i in range(40):
            if proc.poll() is not None:
                break
            try:
                checkpointer.checkpoint([proc.pid], store, f"loop-{i}", durable=False)
            except checkpointer.CheckpointError as exc:     # a vfork wait: "try again"
                failures.append(str(exc))
        return proc.wait(timeout=60)        # while the thread that traced it still lives

    with ThreadPoolExecutor(max_workers=1) as tracer:   # one thread, as the daemon's
        status = tracer.submit(checkpoints_then_exit_status).result()
    assert status == 0 and out.read_text() == "done"
    assert not [f for f in failures if "traced by a debugger" in f], failures
