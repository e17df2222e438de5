"""A process stopped by job control (^Z) is checkpointed as it is (the checkpoint leaves
it stopped), and restored stopped: it goes on, with its threads, only when continued."""
from __future__ import annotations

import os
import signal
import time

import checkpointer
from checkpointer import load_image

from ckpt_helpers import assert_unbroken, children_of, ok_lines, state_of, wait_for

LINE = 20


def test_a_stopped_job_is_checkpointed_and_restored_stopped(procs, store, tmp_path):
    out = tmp_path / "job.out"
    proc = procs.python("job_stop.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "the job to run")
    [child] = children_of(proc.pid)
    os.kill(child, signal.SIGSTOP)   # SIGTSTP (^Z) is ignored in an orphaned process group like this one
    wait_for(lambda: state_of(child) == "T", "the job to stop")
    checkpointer.checkpoint([proc.pid], store, "job", tree=True)
    assert state_of(child) == "T", "the checkpoint let the stopped job run"
    stopped = [p["pid"] for p in load_image(store, "job").processes if p.get("stopped")]
    assert stopped == [child]
    procs.kill(proc)
    size = out.stat().st_size
    restored = checkpointer.restore(store, "job")
    procs.restored.append(restored)
    [restored_child] = [pid for pid in restored.pids if pid != restored.pids[0]]
    wait_for(lambda: state_of(restored_child) == "T", "the restored job to be stopped")
    time.sleep(0.3)
    assert out.stat().st_size == size, "the restored job ran while stopped"
    os.kill(restored_child, signal.SIGCONT)
    wait_for(lambda: out.stat().st_size >= size + 150 * LINE, "the continued job to run")
    assert assert_unbroken(out, child) > size // LINE + 140


def test_a_job_stopped_by_sigtstp_stays_stopped_by_sigtstp(procs, store, tmp_path):
    """A shell shows a job stopped by ^Z (SIGTSTP) differently from one stopped by SIGSTOP
    (bash: "Stopped" and "Stopped (signal)"): the parent's waitpid() must see the same
    signal after a checkpoint (which continues the job and stops it again) and a restore.
    (It sees "continued" then "stopped", or only "stopped" when the job is stopped again
    before the shell, thawed too, waits: the kernel keeps only a child's latest change.)"""
    out = tmp_path / "tstp.out"
    proc = procs.python("tstp_job.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1], "the job to start")
    child = int(ok_lines(out)[0].split()[1])
    wait_for(lambda: os.getpgid(child) == child, "the job's process group")
    os.kill(child, signal.SIGTSTP)
    wait_for(lambda: ok_lines(out)[-1:] == [f"stopped {signal.SIGTSTP}"], "the shell to see the job stopped")
    checkpointer.checkpoint([proc.pid], store, "tstp", tree=True)
    wait_for(lambda: len(ok_lines(out)) >= 3 and ok_lines(out)[-1] == f"stopped {signal.SIGTSTP}",
             "the shell to see the checkpoint's stop")
    assert ok_lines(out)[2:] in (["continued", f"stopped {signal.SIGTSTP}"], [f"stopped {signal.SIGTSTP}"])
    seen = len(ok_lines(out))
    procs.kill(proc)
    restored = checkpointer.restore(store, "tstp")
    procs.restored.append(restored)
    wait_for(lambda: len(ok_lines(out)) > seen, "the restored shell to see its job stopped")
    assert ok_lines(out)[seen:] == [f"stopped {signal.SIGTSTP}"]
    [restored_child] = [pid for pid in restored.pids if pid != restored.pids[0]]
    assert state_of(restored_child) == "T"
