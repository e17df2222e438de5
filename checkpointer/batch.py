"""Many system calls injected into the threads of a frozen process, one trip per thread.

What: `SyscallBatch(pid)` collects system calls per thread (`add(tid, nr, *args,
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
is ignored). Registers are clobbered: callers mark the threads touched (the thaw sets them
back). x86-64 only.
"""
from __future__ import annotations

import os
import signal
import struct
from dataclasses import dataclass, field

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

    def check(self, what: str) -> int:
        """The result; a CheckpointError naming `what` if the call failed."""
        if -4096 < self.result < 0:
            raise CheckpointError(f"{what} failed in task {self.tid}: {os.strerror(-self.result)}")
        return self.result

    def output(self, what: str) -> bytes:
        """The bytes the call wrote to its output space; a CheckpointError naming `what` if it failed."""
        self.check(what)
        return self.out


@dataclass
class _Layout:
    """Where each thread's code and each call's result and output sit in the mapping."""
    code: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # tid -> (offset, code)
    result_at: dict[int, int] = field(default_factory=dict)           # id(call) -> offset
    out_at: dict[int, int] = field(default_factory=dict)              # id(call) -> offset
    size: int = 0


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
            layout = self._layout(0)
            base = inj.check(kernel.NR["mmap"], 0, layout.size, PROT_RWX, MAP_PRIVATE_ANONYMOUS, -1, 0,
                             what="mmap (injection page)")
            try:
                layout = self._layout(base)
                image = bytearray(layout.size)
                for offset, code in layout.code.values():
                    image[offset:offset + len(code)] = code
                inj.write(base, bytes(image))
                for tid, (offset, code) in layout.code.items():
                    _run_blob(threads[tid], base + offset, base + offset + len(code))
                done = inj.read(base, layout.size)
            finally:
                inj.check(kernel.NR["munmap"], base, layout.size, what="munmap (injection page)")
        finally:
            inj.close()
        for calls in self.calls.values():
            for call in calls:
                raw = struct.unpack_from("Q", done, layout.result_at[id(call)])[0]
                call.result = raw - (1 << 64) if raw >= 1 << 63 else raw
                at = layout.out_at[id(call)]
                call.out = done[at:at + call.out_size]

    def _layout(self, base: int) -> _Layout:
        """Code first (its size does not depend on base), then 8-byte results, then outputs."""
        layout = _Layout()
        every = [call for calls in self.calls.values() for call in calls]
        code_bytes = sum(code_size(len(call.args)) for call in every) + len(INT3) * len(self.calls)
        data = (code_bytes + 15) & ~15
        for call in every:
            layout.result_at[id(call)] = data
            data += 8
        for call in every:
            layout.out_at[id(call)] = data
            data += (call.out_size + 7) & ~7
        offset = 0
        for tid, calls in self.calls.items():
            code = b"".join(_code(call, base + layout.result_at[id(call)], base + layout.out_at[id(call)])
                            for call in calls) + INT3
            layout.code[tid] = (offset, code)
            offset += len(code)
        layout.size = (data + kernel.PAGE_SIZE - 1) & ~(kernel.PAGE_SIZE - 1)
        return layout


def _code(call: Call, result_addr: int, out_addr: int) -> bytes:
    return syscall_code(call.nr, [out_addr if value is OUT else value for value in call.args], result_addr)


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
