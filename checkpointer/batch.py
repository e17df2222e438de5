"""Many system calls injected into the threads of a frozen process, one trip per thread.

What: `SyscallBatch(pid, ignored_signals)` collects system calls per thread (`add(tid, nr, *args,
out=N)`: N bytes of output space whose address is passed wherever the argument `OUT`
stands); `run(threads)` maps one temporary page run into the process (an injected mmap),
writes there, per thread, a small x86-64 code blob (for each call: load the registers,
`syscall`, store rax) ending in `int3`, and runs each thread through its blob with one
PTRACE_CONT; the SIGTRAP of the int3 stops it again, where it is not delivered (the next
resume passes no signal). One read takes every result; an injected munmap removes the
mapping. Each `Call` then has `.result` (raw, negative = -errno) and `.out`.
Why: an injected system call on its own costs four ptrace round trips (set registers,
syscall entry, syscall exit, get registers); a process with a few signal handlers, timers
and threads needs tens of them in every stop. A blob costs two injected calls per
process plus one round trip per thread.

Simplifications: the thread runs the blob with every signal but SIGTRAP blocked. A
SIGTRAP pending at that moment is taken off the queue by its stop and kept in
`FrozenThread.caught` (the thaw queues it again, as it does for the freeze's own catches);
a process that ignores SIGTRAP runs its calls one by one instead (the int3 of a blob would
reset its SIGTRAP disposition to the default: the kernel does that for a forced signal that
is ignored). A seccomp filter that traps one of the calls (SIGSYS) fails the batch with a
CheckpointError, as it failed a single injected call. Registers and masks are clobbered:
`run` marks the threads touched, and the thaw sets them back. x86-64 only.
"""
from __future__ import annotations

import os
import signal
import struct
from dataclasses import dataclass

from . import kernel
from .blobcode import INT3, code_size, syscall_code
from .errors import CheckpointError, ProcessGone
from .freeze import ALL_SIGNALS, FrozenThread, stack_scratch, syscall_insn_of
from .inject import Injector

OUT = object()  # stands, among a call's arguments, for the address of its output space
SIGTRAP_BIT = 1 << (signal.SIGTRAP - 1)
PROT_RWX, MAP_PRIVATE_ANONYMOUS = 7, 0x22


@dataclass
class Call:
    tid: int
    nr: int
    args: tuple
    out_size: int
    result: int = 0
    out: bytes = b""
    result_at: int = 0  # offsets in the blob's mapping
    out_at: int = 0

    def check(self, what: str) -> int:
        """The result; a CheckpointError naming `what` if the call failed."""
        if -4096 < self.result < 0:
            raise CheckpointError(f"{what} failed in task {self.tid}: {os.strerror(-self.result)}")
        return self.result

    def output(self, what: str) -> bytes:
        """The bytes the call wrote to its output space; a CheckpointError naming `what` if it failed."""
        self.check(what)
        return self.out


class SyscallBatch:
    def __init__(self, pid: int, ignored_signals: int):
        """`ignored_signals`: the process's SigIgn mask (/proc/PID/status)."""
        self.pid = pid
        self.ignores_sigtrap = bool(ignored_signals & SIGTRAP_BIT)
        self.calls: dict[int, list[Call]] = {}

    def add(self, tid: int, nr: int, *args, out: int = 0) -> Call:
        call = Call(tid, nr, args, out)
        self.calls.setdefault(tid, []).append(call)
        return call

    def run(self, threads: dict[int, FrozenThread]) -> None:
        """Run every call in its (frozen) thread; `threads` by tid, the process's main thread among them."""
        if not self.calls:
            return
        for tid in self.calls:
            threads[tid].touched = True
        if self.ignores_sigtrap:
            for tid, calls in self.calls.items():
                _run_one_by_one(self.pid, threads[tid], calls)
            return
        main = threads[self.pid]
        kernel.set_sigmask(main.tid, ALL_SIGNALS)
        inj = Injector(main.tid, syscall_insn_of(self.pid), *stack_scratch(main.regs))
        try:
            _, size = self._place()
            base = inj.check(kernel.NR["mmap"], 0, size, PROT_RWX, MAP_PRIVATE_ANONYMOUS, -1, 0,
                             what="mmap (injection page)")
            try:
                code, entries = bytearray(), []
                for tid, calls in self.calls.items():
                    start = base + len(code)
                    code += b"".join(_code(call, base) for call in calls) + INT3
                    entries.append((tid, start, base + len(code)))
                inj.write(base, bytes(code))    # the rest of a new mapping reads as zeros
                for tid, start, end in entries:
                    _run_blob(threads[tid], start, end)
                done = inj.read(base, size)
            finally:
                inj.check(kernel.NR["munmap"], base, size, what="munmap (injection page)")
        finally:
            inj.close()
        for calls in self.calls.values():
            for call in calls:
                raw = struct.unpack_from("Q", done, call.result_at)[0]
                call.result = raw - (1 << 64) if raw >= 1 << 63 else raw
                call.out = done[call.out_at:call.out_at + call.out_size]

    def _place(self) -> tuple[int, int]:
        """Offsets in the mapping: every thread's code first, then 8-byte results, then
        outputs (set on each call); returns (bytes of code, size of the mapping)."""
        every = [call for calls in self.calls.values() for call in calls]
        code_bytes = sum(code_size(len(call.args)) for call in every) + len(INT3) * len(self.calls)
        data = (code_bytes + 15) & ~15
        for call in every:
            call.result_at = data
            data += 8
        for call in every:
            call.out_at = data
            data += (call.out_size + 7) & ~7
        return code_bytes, (data + kernel.PAGE_SIZE - 1) & ~(kernel.PAGE_SIZE - 1)


def _code(call: Call, base: int) -> bytes:
    out = base + call.out_at
    return syscall_code(call.nr, [out if value is OUT else value for value in call.args], base + call.result_at)


def _run_blob(thread: FrozenThread, start: int, end: int) -> None:
    """Run a thread from `start` until its int3 (the last byte before `end`) traps."""
    tid = thread.tid
    kernel.set_sigmask(tid, ALL_SIGNALS & ~SIGTRAP_BIT)
    regs = thread.regs.copy()
    regs.rip, regs.orig_rax = start, 0xFFFFFFFFFFFFFFFF  # no syscall restart on resume
    kernel.set_regs(tid, regs)
    while True:
        kernel.ptrace(kernel.PTRACE_CONT, tid, 0, 0)
        _, status = kernel.waitpid(tid)
        if not os.WIFSTOPPED(status):
            raise ProcessGone(tid, "it died while running injected system calls")
        if os.WSTOPSIG(status) == signal.SIGTRAP and status >> 16 == 0:
            if kernel.get_regs(tid).rip == end:
                break
            thread.caught.append(kernel.get_siginfo(tid))  # a SIGTRAP that was pending: keep it
            continue
        raise CheckpointError(f"task {tid} stopped unexpectedly (signal {os.WSTOPSIG(status)}, event "
                              f"{status >> 16}) while running injected system calls")
    kernel.set_sigmask(tid, ALL_SIGNALS)


def _run_one_by_one(pid: int, thread: FrozenThread, calls: list[Call]) -> None:
    kernel.set_sigmask(thread.tid, ALL_SIGNALS)
    inj = Injector(thread.tid, syscall_insn_of(pid), *stack_scratch(thread.regs))
    saved = inj.read(inj.scratch, inj.scratch_size)
    try:
        for call in calls:
            call.result = inj.call(call.nr, *[inj.scratch if a is OUT else a for a in call.args])
            call.out = inj.read(inj.scratch, call.out_size)
    finally:
        inj.write(inj.scratch, saved)
        inj.close()
