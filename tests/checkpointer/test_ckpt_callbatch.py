"""CallBatch: many system calls run by a restore stub in one trip (restore's mappings)."""
from __future__ import annotations

import os
import signal

import pytest

from checkpointer import kernel, stub
from checkpointer.builder import wait_event_stop
from checkpointer.callbatch import CallBatch
from checkpointer.errors import CheckpointError
from checkpointer.freeze import ALL_SIGNALS
from checkpointer.inject import Injector
from checkpointer.kernel import NR

NR_GETPID = 39


@pytest.fixture
def stopped_stub():
    """A restore stub, seized and stopped with every signal blocked, and its injector."""
    launcher = stub.spawn()
    inj = None
    try:
        kernel.ptrace(kernel.PTRACE_SEIZE, launcher.pid, 0, kernel.PTRACE_O_TRACESYSGOOD | kernel.PTRACE_O_EXITKILL)
        kernel.ptrace(kernel.PTRACE_INTERRUPT, launcher.pid, 0, 0)
        wait_event_stop(launcher.pid)
        kernel.set_sigmask(launcher.pid, ALL_SIGNALS)
        inj = Injector(launcher.pid, stub.STUB_SYSCALL, stub.STUB_SCRATCH, 256)
        yield inj
    finally:
        if inj is not None:
            inj.close()
        launcher.kill()
        launcher.wait()


def _area(inj: Injector) -> CallBatch:
    return CallBatch(inj, stub.STUB_SCRATCH + 256, stub.STUB_SCRATCH_SIZE - 256)


def test_batch_runs_calls_in_order_and_returns_results(stopped_stub):
    inj = stopped_stub
    batch = _area(inj)
    path = batch.put(b"/dev/null\0")
    opened = batch.add(NR["openat"], -100, path, os.O_RDONLY, 0, what="openat(/dev/null)")
    pid = batch.add(NR_GETPID, what="getpid")
    results = batch.run()
    assert results[pid] == inj.tid and results[opened] >= 0
    assert os.readlink(f"/proc/{inj.tid}/fd/{results[opened]}") == "/dev/null"
    second = _area(inj)
    second.add(NR["close"], results[opened], what="close")
    assert second.run() == [0]
    assert not os.path.exists(f"/proc/{inj.tid}/fd/{results[opened]}")
    # the stub is still usable one call at a time, with every signal (SIGTRAP too) blocked
    assert inj.call(NR_GETPID) == inj.tid
    assert kernel.get_sigmask(inj.tid) & (1 << (signal.SIGTRAP - 1))


def test_batch_names_the_first_failed_call_and_unchecked_calls_do_not_raise(stopped_stub):
    inj = stopped_stub
    batch = _area(inj)
    missing = batch.add(NR["openat"], -100, batch.put(b"/no/such/file\0"), os.O_RDONLY, 0, what=None)
    batch.add(NR["close"], 999, what="close(999)")
    batch.add(NR["close"], 998, what="close(998)")
    with pytest.raises(CheckpointError, match=r"close\(999\) failed in task \d+: Bad file descriptor"):
        batch.run()
    assert batch.results[missing] == -2  # ENOENT, left to the caller
    assert inj.call(NR_GETPID) == inj.tid


def test_batch_that_does_not_fit_is_refused(stopped_stub):
    batch = CallBatch(stopped_stub, stub.STUB_SCRATCH + 256, 64)
    for _ in range(4):
        batch.add(NR_GETPID, what="getpid")
    with pytest.raises(CheckpointError, match="do not fit"):
        batch.run()
