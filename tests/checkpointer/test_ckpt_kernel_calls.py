"""The thin kernel bindings the stop uses many times (checkpointer/kernel.py), made cheaper:
what each shortcut must keep. A copy of a thread's registers holds every register of the
original and changes apart from it (the injection changes copies, the thaw sets the
original back); a ptrace request that fails still raises an OSError that names it, though
the message is now made only on failure."""
from __future__ import annotations

import errno
import os

import pytest

from checkpointer import freeze, kernel
from checkpointer.kernel import REG_NAMES


def test_a_copy_of_a_threads_registers_holds_them_all_and_changes_apart(procs):
    proc = procs.start(["sleep", "60"])
    with freeze([proc.pid]) as frozen:
        original = frozen.processes[proc.pid].main.regs
        before = original.to_dict()
        copy = original.copy()
        assert copy.to_dict() == before
        for name in REG_NAMES:
            setattr(copy, name, getattr(copy, name) ^ 0x5A5A)
        assert original.to_dict() == before, "changing the copy changed the original"
        assert kernel.get_regs(proc.pid).to_dict() == before


def test_a_failed_ptrace_request_raises_naming_the_request_and_task():
    with pytest.raises(OSError) as raised:
        kernel.ptrace(kernel.PTRACE_GETSIGMASK, os.getpid(), 8, 0)     # not our tracee: ESRCH
    assert raised.value.errno == errno.ESRCH
    assert f"ptrace({kernel.PTRACE_GETSIGMASK:#x}, {os.getpid()})" in str(raised.value)


def test_a_kernel_without_the_syscall_dispatch_request_reads_as_dispatch_off(monkeypatch):
    """Before Linux 6.4 ptrace does not know PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG (EIO):
    every freeze reads each thread's dispatch, so that must read as off, not fail the stop;
    it is asked once. Any other error (the thread gone) still raises."""
    asked = []

    def old_kernel(request, tid, *args):
        asked.append(request)
        raise OSError(errno.EIO if tid == 1 else errno.ESRCH, "ptrace")

    monkeypatch.setattr(kernel, "ptrace", old_kernel)
    monkeypatch.setattr(kernel, "_sud_request_known", [True])
    with pytest.raises(ProcessLookupError):
        kernel.get_syscall_dispatch(2)
    assert kernel.get_syscall_dispatch(1) == [0, 0, 0, 0]
    assert kernel.get_syscall_dispatch(2) == [0, 0, 0, 0]
    assert asked == [kernel.PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG] * 2
