"""Make a ptrace-stopped task run system calls on our behalf.

What: `Injector.call(nr, *args)` points the task at a `syscall` instruction with the
arguments in its registers, steps it through syscall entry and exit with
PTRACE_SYSCALL, and returns the result; `scratch` memory in the task carries
structures and strings in and out. Why: some state can only be read or set from
inside the process (brk, signal handlers, the tid address, mappings of a restored
process...).

Simplifications: the caller blocks every signal of the task (PTRACE_SETSIGMASK)
while injecting, so no signal-delivery-stop interleaves but a SIGSTOP's, which cannot be
blocked (job control: a parent stopping its child, stress-ng --kill): given a `held` list
(the thread's `FrozenThread.caught`), the injector keeps the stop's siginfo there and goes
on without it (and past the trap a SIGCONT makes) (the thaw stops the process then: freeze.py); without one it is an error, as
any other unexpected stop (a stub being restored). Fork/clone events seen
during a call (a clone3 we injected, with PTRACE_O_TRACEFORK set) are collected in
`children`. The task's registers are NOT restored by the injector: callers save
them first and set them back (see `restart_fixup`).
"""
from __future__ import annotations

import os
import signal
import struct

from . import kernel, procfs
from .errors import CheckpointError, ProcessGone
from .kernel import Regs

SYSCALL_INSN = b"\x0f\x05"
_SYSCALL_STOP = signal.SIGTRAP | 0x80
_FORK_EVENTS = (kernel.PTRACE_EVENT_FORK, kernel.PTRACE_EVENT_VFORK, kernel.PTRACE_EVENT_CLONE)


class Injector:
    def __init__(self, tid: int, syscall_addr: int, scratch: int, scratch_size: int,
                 held: list[bytes] | None = None):
        self.tid = tid
        self.held = held
        self.syscall_addr = syscall_addr
        self.scratch = scratch
        self.scratch_size = scratch_size
        self.children: list[int] = []
        self._base: Regs | None = None   # the registers calls start from: read at the first call
        try:
            self._mem, self._owns_mem = procfs.open_memory(tid, write=True)
        except FileNotFoundError as exc:
            raise ProcessGone(tid) from exc

    def close(self) -> None:
        if self._mem >= 0 and self._owns_mem:
            os.close(self._mem)
        self._mem = -1

    # memory -----------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        data = os.pread(self._mem, size, addr)
        if len(data) != size:
            raise CheckpointError(f"short read of {size} bytes at {addr:#x} in task {self.tid}")
        return data

    def write(self, addr: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            done = os.pwrite(self._mem, view, addr)
            if done == 0:           # the task's memory is gone: it is exiting (killed)
                raise ProcessGone(self.tid, "its memory went away while being written")
            view, addr = view[done:], addr + done

    def put(self, data: bytes, offset: int = 0) -> int:
        """Copy data into scratch memory at offset; returns its address in the task."""
        if offset + len(data) > self.scratch_size:
            raise CheckpointError(f"{len(data)} bytes do not fit the injection scratch area")
        self.write(self.scratch + offset, data)
        return self.scratch + offset

    # syscalls ---------------------------------------------------------------
    def call(self, nr: int, *args: int) -> int:
        """Run one syscall in the task; returns the raw result (negative = -errno)."""
        if self._base is None:    # (a batch run from a mapping makes no call: no read)
            self._base = kernel.get_regs(self.tid)
        regs = self._base.copy()
        regs.rip, regs.rax, regs.orig_rax = self.syscall_addr, nr, 0xFFFFFFFFFFFFFFFF
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, value & 0xFFFFFFFFFFFFFFFF)
        kernel.set_regs(self.tid, regs)
        self._step_to_syscall_stop()  # entry
        self._step_to_syscall_stop()  # exit
        result = kernel.get_regs(self.tid).rax
        return result - (1 << 64) if result >= 1 << 63 else result

    def check(self, nr: int, *args: int, what: str = "") -> int:
        """`call` that raises a CheckpointError naming `what` when the syscall fails."""
        result = self.call(nr, *args)
        if -4096 < result < 0:
            raise CheckpointError(f"{what or f'syscall {nr}'} failed in task {self.tid}: {os.strerror(-result)}")
        return result

    def take_pending(self, signo: int) -> None:
        """Take signal `signo` off the task's queues, every instance of it, without waiting
        (rt_sigtimedwait with a zero timeout; the signal may be blocked). Uses the scratch
        area's first 8 bytes and 16 bytes at offset 64."""
        wanted = self.put(struct.pack("Q", 1 << (signo - 1)))
        no_wait = self.put(bytes(16), 64)
        while self.call(kernel.NR["rt_sigtimedwait"], wanted, 0, no_wait, 8) == signo:
            pass

    def _step_to_syscall_stop(self) -> None:
        while True:
            kernel.ptrace(kernel.PTRACE_SYSCALL, self.tid, 0, 0)
            _, status = kernel.waitpid(self.tid)
            if not os.WIFSTOPPED(status):
                raise ProcessGone(self.tid, "it died during an injected system call")
            event = status >> 16
            if event in _FORK_EVENTS:
                self.children.append(kernel.get_event_msg(self.tid))
                continue
            if os.WSTOPSIG(status) == _SYSCALL_STOP:
                return
            if self.held is not None and job_control_trap(self.tid, status, self.held):
                continue
            raise CheckpointError(
                f"task {self.tid} stopped unexpectedly (signal {os.WSTOPSIG(status)}, event {event}) "
                "during an injected system call")


def job_control_trap(tid: int, status: int, held: list[bytes]) -> bool:
    """Whether `status`, a stop of `tid` while it runs injected code, is job control's, to
    be resumed without a signal: a SIGSTOP's delivery (its siginfo appended to `held`: the
    signal is off the queue, and only acted on if passed on resuming) or the trap by which
    a SIGCONT notifies a seized tracee (PTRACE_EVENT_STOP with SIGTRAP)."""
    if not os.WIFSTOPPED(status):
        return False
    event, signo = status >> 16, os.WSTOPSIG(status)
    if event == 0 and signo == signal.SIGSTOP:
        held.append(kernel.get_siginfo(tid))
        return True
    return event == kernel.PTRACE_EVENT_STOP and signo == signal.SIGTRAP


def restart_fixup(regs: Regs, same_task: bool) -> Regs:
    """Registers of a task stopped inside a syscall, adjusted so it re-enters that syscall.

    The kernel only performs its restart logic on the way out of a signal stop; after
    injected syscalls (or in a new task) we do it ourselves. A restart block (nanosleep's
    remaining time) survives only in the same task; a restored one enters the syscall anew.
    """
    regs = regs.copy()
    if regs.orig_rax >= 1 << 63:
        return regs
    error = -(regs.rax - (1 << 64)) if regs.rax >= 1 << 63 else 0
    if error in (kernel.ERESTARTSYS, kernel.ERESTARTNOINTR, kernel.ERESTARTNOHAND):
        regs.rax, regs.rip = regs.orig_rax, regs.rip - 2
    elif error == kernel.ERESTART_RESTARTBLOCK:
        if same_task:
            regs.rax, regs.rip = kernel.NR["restart_syscall"], regs.rip - 2
        elif regs.orig_rax != kernel.NR["restart_syscall"]:
            # the restart block stayed with the dead task: enter the syscall again with its
            # own arguments (still in their registers). A relative timeout starts over, a
            # later wake-up where -EINTR would end programs such as `tail -f` (poll)
            regs.rax, regs.rip = regs.orig_rax, regs.rip - 2
        else:
            regs.rax = (-4) & 0xFFFFFFFFFFFFFFFF  # -EINTR: which syscall it restarts is unknown
    regs.orig_rax = 0xFFFFFFFFFFFFFFFF
    return regs
