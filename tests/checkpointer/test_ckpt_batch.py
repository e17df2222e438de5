"""Injected system calls run as one code blob per thread (checkpointer/batch.py): results
and outputs land per call and per thread, failures are reported, and the target's
SIGTRAP state (a handler, a pending SIGTRAP, an ignored SIGTRAP) survives the blob's int3."""
from __future__ import annotations

import os
import struct
import sys

import pytest

from checkpointer import CheckpointError, capture, freeze, kernel, load_image
from checkpointer.batch import OUT, SyscallBatch
from checkpointer.procfs import status
from ckpt_helpers import ok_lines, wait_for

NR_GETTID, NR_CLOSE, NR_RT_SIGACTION = 186, 3, 13
SIGTRAP = 5

# Sets SIGTRAP as argv[2] says ("handler" + one pending while blocked, or "ignore"),
# then prints "ok <n>" lines; on a "check" file it unblocks SIGTRAP and reports what it sees.
TARGET = r"""
import os, signal, sys, time
out, mode = sys.argv[1], sys.argv[2]
hits = []
if mode == "handler":
    signal.signal(signal.SIGTRAP, lambda *_: hits.append(1))
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTRAP])
    os.kill(os.getpid(), signal.SIGTRAP)
else:
    signal.signal(signal.SIGTRAP, signal.SIG_IGN)
n = 0
while True:
    n += 1
    with open(out, "a") as f:
        f.write(f"ok {n}\n")
    if os.path.exists(out + ".check"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTRAP])
        time.sleep(0.05)
        ignored = signal.getsignal(signal.SIGTRAP) is signal.SIG_IGN
        with open(out + ".result", "w") as f:
            f.write(f"hits={len(hits)} ignored={ignored}\n")
        break
    time.sleep(0.01)
time.sleep(3600)
"""


def test_a_batch_runs_each_threads_calls_in_that_thread_and_reports_failures(procs, binaries, tmp_path):
    out = tmp_path / "threads.out"
    proc = procs.start([str(binaries / "threads"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the threads target to run")
    with freeze([proc.pid]) as frozen:
        threads = frozen.processes[proc.pid].threads
        ignored = int(status(proc.pid)["SigIgn"], 16)
        batch = SyscallBatch(proc.pid, ignored)
        tids = {tid: [batch.add(tid, NR_GETTID), batch.add(tid, NR_GETTID)] for tid in threads}
        bad = batch.add(proc.pid, NR_CLOSE, -1)
        action = batch.add(proc.pid, NR_RT_SIGACTION, SIGTRAP, 0, OUT, 8, out=32)
        before = open(f"/proc/{proc.pid}/maps").read()
        batch.run(threads)
        assert open(f"/proc/{proc.pid}/maps").read() == before  # the blob's mapping is gone
    assert len(tids) == 5
    for tid, calls in tids.items():
        assert [call.check("gettid") for call in calls] == [tid, tid]
    assert bad.result == -9  # EBADF
    with pytest.raises(CheckpointError, match="close.*Bad file descriptor"):
        bad.check("close(-1)")
    assert struct.unpack("QQQQ", action.output("rt_sigaction"))[0] == 0  # SIG_DFL
    size = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= size + 20, "the threads to run on after the thaw")


@pytest.mark.parametrize("mode", ["handler", "ignore"])
def test_sigtrap_handler_pending_and_ignored_survive_a_capture(procs, store, tmp_path, mode):
    script = tmp_path / "sigtrap.py"
    script.write_text(TARGET)
    out = tmp_path / "sigtrap.out"
    proc = procs.start([sys.executable, str(script), str(out), mode])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the SIGTRAP target to run")
    for _ in range(3):
        with freeze([proc.pid]) as frozen:
            root = capture(frozen, store)
    actions = load_image(store, root).processes[0]["sigactions"]
    assert str(SIGTRAP) in actions
    assert (actions[str(SIGTRAP)][0] == 1) == (mode == "ignore")  # SIG_IGN is 1
    (tmp_path / "sigtrap.out.check").write_text("")
    result = tmp_path / "sigtrap.out.result"
    wait_for(lambda: result.exists() and result.read_text().endswith("\n"), "the target to report")
    expected = "hits=1 ignored=False" if mode == "handler" else "hits=0 ignored=True"
    assert result.read_text().strip() == expected
    assert os.path.exists(f"/proc/{proc.pid}")


SECCOMP_TRAP = 0x30000                      # seccomp_refuser.py: a trapped call (SIGSYS)
NR_GETITIMER, NR_POLL = 36, 7


def test_a_thread_whose_call_fails_leaves_every_thread_stopped_and_the_process_running_on(procs, tmp_path,
                                                                                         monkeypatch):
    """A call that a seccomp filter traps (SIGSYS) fails the batch with a CheckpointError;
    every thread is stopped again when the batch raises, and the thaw lets the process
    run on (its filter, its worker thread and its pending state as they were). As root
    the freeze suspends seccomp (kernel.SUSPEND_SECCOMP): here it must not, as for any
    other user."""
    monkeypatch.setattr(kernel, "SUSPEND_SECCOMP", 0)
    out = tmp_path / "seccomp.out"      # a worker thread, and a filter on the main thread that traps getitimer
    proc = procs.python("seccomp_refuser.py", str(out), str(NR_GETITIMER), hex(SECCOMP_TRAP), "thread")
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the seccomp target to run")
    with freeze([proc.pid]) as frozen:
        threads = frozen.processes[proc.pid].threads
        assert len(threads) == 2
        worker = next(tid for tid in threads if tid != proc.pid)
        batch = SyscallBatch(proc.pid, int(status(proc.pid)["SigIgn"], 16))
        batch.add(proc.pid, NR_GETITIMER, 0, OUT, out=32)     # the main thread's blob fails first
        batch.add(worker, NR_POLL, 0, 0, 300)
        with pytest.raises(CheckpointError, match="stopped unexpectedly"):
            batch.run(threads)
        for tid in threads:                                   # stopped: their registers can be read
            kernel.get_regs(tid)
    seen = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= seen + 3, "the target to run on after the thaw")
    assert proc.poll() is None
