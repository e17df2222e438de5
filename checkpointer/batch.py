"""Many system calls injected into the threads of a frozen process, one trip per thread.

What: `SyscallBatch(pid, ignored_signals)` collects system calls per thread (`add(tid, nr, *args,
out=N)`: N bytes of output space whose address is passed wherever the argument `OUT`
stands); `run(threads)` maps one temporary page run into the process (an injected mmap),
writes there, per thread, a small x86-64 code blob (for each call: load the registers,
`syscall`, store rax) ending in `int3`, and lets every thread run its blob (one
PTRACE_CONT each, all of them before waiting for any: their round trips overlap); the
SIGTRAP of the int3 stops each again, where it is not delivered (the next resume passes
no signal). One read takes every result; an injected munmap removes the mapping, unless
`run(threads, keep_page=True)` keeps it for the next checkpoint (injection_page.py).
Each `Call` then has `.result` (raw, negative = -errno) and `.out`.
Why: an injected system call on its own costs four ptrace round trips (set registers,
syscall entry, syscall exit, get registers); a process with a few signal handlers, timers
and threads needs tens of them in every stop. A blob costs two injected calls per
process (none with a kept page) plus one round trip per thread.

Simplifications: the thread runs the blob with every signal but SIGTRAP blocked. A
SIGTRAP pending at that moment, or a SIGSTOP (it cannot be blocked), is taken off the queue
by its stop and kept in `FrozenThread.caught` (the thaw queues it again, as it does for the
freeze's own catches, or stops the process: freeze.py);
a process that ignores SIGTRAP runs its calls one by one instead (the int3 of a blob would
reset its SIGTRAP disposition to the default: the kernel does that for a forced signal that
is ignored), and so does one with no room for the mapping under an address-space limit
we may not lift (injectmap.py). A seccomp filter that traps one of the calls (SIGSYS) fails the batch with a
CheckpointError, as it failed a single injected call. Registers and masks are clobbered:
`run` marks the threads touched, and the thaw sets them back. x86-64 only.
"""
from __future__ import annotations

import os
import signal
import struct
from dataclasses import dataclass

from . import injection_page, kernel
from .blobcode import INT3, code_size, syscall_code
from .errors import CheckpointError, ProcessGone
from .freeze import ALL_SIGNALS, FrozenThread, stack_scratch, syscall_insn_of
from .inject import Injector, job_control_trap
from .injectmap import map_rwx

OUT = object()  # stands, among a call's arguments, for the address of its output space
SIGTRAP_BIT = 1 << (signal.SIGTRAP - 1)


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
        self._layout: tuple[int, int] | None = None     # _place's, once the calls are all added
        # the blobs as last written (run again, from a page kept in the process, at every
        # checkpoint: capture._state_calls): (base address, code, [(tid, start, end) offsets])
        self._code: tuple[int, bytes, list[tuple[int, int, int]]] | None = None

    def add(self, tid: int, nr: int, *args, out: int = 0) -> Call:
        call = Call(tid, nr, args, out)
        self.calls.setdefault(tid, []).append(call)
        self._layout = self._code = None
        return call

    def run(self, threads: dict[int, FrozenThread], keep_page: bool = False) -> None:
        """Run every call in its (frozen) thread; `threads` by tid, the process's main thread
        among them. `keep_page`: the blobs' mapping stays in the process for the next
        checkpoint (injection_page.py: for processes that are checkpointed again and again)."""
        if not self.calls:
            return
        for tid in self.calls:
            threads[tid].touched = True
        done = None if self.ignores_sigtrap else self._run_mapped(threads, keep_page)
        if done is None:    # no blob: the thread's SIGTRAP ignored, or no room for its page
            for tid, calls in self.calls.items():
                _run_one_by_one(self.pid, threads[tid], calls)
            return
        for calls in self.calls.values():
            for call in calls:
                raw = struct.unpack_from("Q", done, call.result_at)[0]
                call.result = raw - (1 << 64) if raw >= 1 << 63 else raw
                call.out = done[call.out_at:call.out_at + call.out_size]

    def _run_mapped(self, threads: dict[int, FrozenThread], keep_page: bool) -> bytes | None:
        """Every thread's blob run from one mapping; the mapping's results and outputs, or
        None if the process has no room for it under an address-space limit we may not
        lift (injectmap.py)."""
        main = threads[self.pid]
        kernel.set_sigmask(main.tid, ALL_SIGNALS)
        inj = Injector(main.tid, syscall_insn_of(self.pid), *stack_scratch(main.regs), held=main.caught)
        try:
            if self._layout is None:
                self._layout = self._place()
            data_end = self._layout[1]
            size = (data_end + kernel.PAGE_SIZE - 1) & ~(kernel.PAGE_SIZE - 1)
            base = injection_page.take(self.pid, inj, data_end) if keep_page else None
            kept = base is not None
            if not kept:
                base = map_rwx(inj, self.pid, size)
            if base is None:
                return None
            try:
                code, offsets = self._blobs(base)
                inj.write(base, code + bytes(data_end - len(code)))   # results and outputs zeroed
                _run_blobs([(threads[tid], base + start, base + end) for tid, start, end in offsets])
                return inj.read(base, data_end)
            finally:
                if not kept:
                    inj.check(kernel.NR["munmap"], base, size, what="munmap (injection page)")
        finally:
            inj.close()

    def _blobs(self, base: int) -> tuple[bytes, list[tuple[int, int, int]]]:
        """Every thread's blob, for a mapping at `base`, one after the other: (their code,
        [(tid, offset of its blob, offset of its end)]); kept for the next run from there."""
        if self._code is None or self._code[0] != base:
            code, offsets = bytearray(), []
            for tid, calls in self.calls.items():
                start = len(code)
                code += b"".join(_code(call, base) for call in calls) + INT3
                offsets.append((tid, start, len(code)))
            self._code = (base, bytes(code), offsets)
        return self._code[1], self._code[2]

    def _place(self) -> tuple[int, int]:
        """Offsets in the mapping: every thread's code first, then 8-byte results, then
        outputs (set on each call); returns (bytes of code, bytes in all)."""
        every = [call for calls in self.calls.values() for call in calls]
        code_bytes = sum(code_size(len(call.args)) for call in every) + len(INT3) * len(self.calls)
        data = (code_bytes + 15) & ~15
        for call in every:
            call.result_at = data
            data += 8
        for call in every:
            call.out_at = data
            data += (call.out_size + 7) & ~7
        return code_bytes, data


def _code(call: Call, base: int) -> bytes:
    out = base + call.out_at
    return syscall_code(call.nr, [out if value is OUT else value for value in call.args], base + call.result_at)


def _run_blobs(entries: list[tuple[FrozenThread, int, int]]) -> None:
    """Run each thread from its `start` until its int3 (the last byte before `end`) traps:
    every thread is let go first, then each is waited for, so that their round trips
    overlap. Every thread is stopped again before this returns or raises."""
    for thread, start, _ in entries:
        kernel.set_sigmask(thread.tid, ALL_SIGNALS & ~SIGTRAP_BIT)
        regs = thread.regs.copy()
        regs.rip, regs.orig_rax = start, 0xFFFFFFFFFFFFFFFF  # no syscall restart on resume
        kernel.set_regs(thread.tid, regs)
    started: list[tuple[FrozenThread, int, int]] = []
    failure: BaseException | None = None
    for entry in entries:
        try:
            kernel.ptrace(kernel.PTRACE_CONT, entry[0].tid, 0, 0)
            started.append(entry)
        except ProcessLookupError as exc:    # killed meanwhile: those let go are still waited for
            failure = ProcessGone(entry[0].tid, "it died while running injected system calls")
            failure.__cause__ = exc
            break
    for thread, _, end in started:
        try:
            _wait_for_int3(thread, end)
        except (CheckpointError, OSError) as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    for thread, _, _ in entries:
        kernel.set_sigmask(thread.tid, ALL_SIGNALS)


def _wait_for_int3(thread: FrozenThread, end: int) -> None:
    """Wait until the thread, running its blob, stops at the int3 before `end`."""
    tid = thread.tid
    while True:
        _, status = kernel.waitpid(tid)
        if not os.WIFSTOPPED(status):
            raise ProcessGone(tid, "it died while running injected system calls")
        trapped = os.WSTOPSIG(status) == signal.SIGTRAP and status >> 16 == 0
        if trapped and kernel.get_regs(tid).rip == end:
            return
        if trapped:
            thread.caught.append(kernel.get_siginfo(tid))  # a SIGTRAP that was pending: keep it
        if trapped or job_control_trap(tid, status, thread.caught):
            kernel.ptrace(kernel.PTRACE_CONT, tid, 0, 0)
            continue
        raise CheckpointError(f"task {tid} stopped unexpectedly (signal {os.WSTOPSIG(status)}, event "
                              f"{status >> 16}) while running injected system calls")


def _run_one_by_one(pid: int, thread: FrozenThread, calls: list[Call]) -> None:
    kernel.set_sigmask(thread.tid, ALL_SIGNALS)
    inj = Injector(thread.tid, syscall_insn_of(pid), *stack_scratch(thread.regs), held=thread.caught)
    saved = inj.read(inj.scratch, inj.scratch_size)
    try:
        for call in calls:
            call.result = inj.call(call.nr, *[inj.scratch if a is OUT else a for a in call.args])
            call.out = inj.read(inj.scratch, call.out_size)
    finally:
        inj.write(inj.scratch, saved)
        inj.close()
