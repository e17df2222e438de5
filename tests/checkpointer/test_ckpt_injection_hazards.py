"""What may get in the way of the system calls a checkpoint runs inside a process.

Job control: a stop signal that arrives while they run is held, not an error, and the
process ends up as its job control last asked (stopped if the stop came last, running if a
SIGCONT followed). A tight address-space limit (RLIMIT_AS): the checkpointer's injection
page is mapped all the same (lifting the limit for a moment), or, under a hard limit we may
not lift, the calls run one by one without it; the process keeps its own limit."""
from __future__ import annotations

import os
import resource
import signal
import struct
from pathlib import Path

import pytest

import checkpointer
from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental

from ckpt_helpers import assert_unbroken, children_of, ok_lines, restored_goes_on, wait_for

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


def _siginfo(signo: int) -> bytes:
    """A siginfo as the freeze keeps one it caught (si_signo, si_errno, si_code SI_USER)."""
    return struct.pack("iii", signo, 0, 0).ljust(128, b"\0")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("caught, stopped", [((signal.SIGCONT, signal.SIGSTOP), True),
                                             ((signal.SIGSTOP, signal.SIGCONT), False)])
def test_job_control_signals_caught_while_frozen_decide_by_their_order(procs, binaries, tmp_path, caught, stopped):
    """A parent's SIGCONT then SIGSTOP, both caught by a freeze: the SIGCONT is queued again at
    the thaw, which must not hide that the SIGSTOP came last (the parent then waits for ever for
    its child to stop); and a SIGCONT after a SIGSTOP leaves the process running."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the counter to run")
    with freeze([proc.pid]) as frozen:
        frozen.processes[proc.pid].main.caught.extend(_siginfo(signo) for signo in caught)
    if stopped:
        wait_for(lambda: _state(proc.pid) == "T", "the process to stop at the thaw")
        os.kill(proc.pid, signal.SIGCONT)
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= lines + 5, "the process to run on")
    assert assert_unbroken(out, proc.pid) >= lines + 5


def test_a_process_without_room_under_its_address_space_limit_is_checkpointed(procs, store, binaries,
                                                                               tmp_path):
    out = tmp_path / "tight.out"
    proc = procs.start([str(binaries / "tight_address_space"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the target to run under its limit")
    limits = resource.prlimit(proc.pid, resource.RLIMIT_AS)
    assert limits[0] != resource.RLIM_INFINITY
    checkpointer.checkpoint([proc.pid], store, "tight")    # a page mapped for this checkpoint only
    inc = Incremental()
    try:
        for _ in range(2):                                  # a page kept for the next checkpoint
            with freeze([proc.pid], tree=True) as frozen:
                inc.capture(frozen, store)
    finally:
        inc.close()
    assert resource.prlimit(proc.pid, resource.RLIMIT_AS) == limits
    [meta] = load_image(store, "tight").processes
    assert meta["rlimits"]["RLIMIT_AS"][0] == limits[0]
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= lines + 20, "the target to run on after the checkpoints")
    procs.kill(proc)
    restored_goes_on(procs, store, "tight", out)
    assert assert_unbroken(out, proc.pid) >= lines + 20


def test_a_hard_address_space_limit_we_may_not_raise_leaves_the_calls_one_by_one(procs, store, binaries,
                                                                                  tmp_path):
    """Without CAP_SYS_RESOURCE (this machine's root lacks it) a hard limit with no room left
    cannot be lifted (stress-ng --rlimit): the checkpoint runs its calls one by one through
    the thread's stack instead, keeps no page in the process, and the process its limit."""
    out = tmp_path / "hard.out"
    proc = procs.start([str(binaries / "tight_address_space"), str(out), "hard"])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the target to run under its limit")
    limits = resource.prlimit(proc.pid, resource.RLIMIT_AS)
    assert limits[0] == limits[1] != resource.RLIM_INFINITY
    inc = Incremental()
    try:
        for _ in range(2):
            with freeze([proc.pid], tree=True) as frozen:
                root = inc.capture(frozen, store)
            if not _effective_capabilities() >> CAP_SYS_RESOURCE & 1:
                assert "rwxp" not in Path(f"/proc/{proc.pid}/maps").read_text(), "a page was mapped"
    finally:
        inc.close()
    assert resource.prlimit(proc.pid, resource.RLIMIT_AS) == limits
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= lines + 20, "the target to run on after the checkpoints")
    procs.kill(proc)
    restored_goes_on(procs, store, root, out)
    assert assert_unbroken(out, proc.pid) >= lines + 20


CAP_SYS_RESOURCE = 24


def _effective_capabilities() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
