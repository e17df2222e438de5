"""Many system calls run by a restore stub in one trip.

What: `CallBatch(inj, area, size)` collects calls (`add(nr, *args, what=...)`) and the
data they point to (`put(bytes)` returns its address in the stub), all placed in the
stub's memory at [area, area + size). `run()` writes there a code blob (per call: load
rax and the argument registers, `syscall`, store rax) ending in `int3`, runs the stub
through it with one PTRACE_CONT (the int3's SIGTRAP stops it; the signal is never
delivered), reads every result with one read, and checks them in order: the first call
that failed raises a CheckpointError naming it. `results` then holds the raw results.
Why: one injected call costs four ptrace round trips (~80-150 us here); the memory
layout of a process is tens of calls (mmap, mremap, munmap, openat, close).

Simplifications: for stubs being built only (restore.py, builder.py): the stub has every
signal blocked. The kernel forces the int3's SIGTRAP through: it unblocks SIGTRAP and
resets its action to the default, so `run` blocks it again, and the builder puts the
process's own SIGTRAP action back after its last batch. No clone (its
child would run the rest of the blob), no call taking an earlier call's result (run two
batches). Registers are clobbered (the builder sets them all at the end). x86-64 only.
"""
from __future__ import annotations

import os
import signal
import struct
from typing import Iterable

from . import kernel
from .blobcode import INT3, code_size, syscall_code
from .errors import CheckpointError, ProcessGone
from .freeze import ALL_SIGNALS
from .inject import Injector, job_control_trap

CALL_BYTES = code_size(6) + 8  # the code of one call and its result slot, at most


def run_all(batch: "CallBatch", calls: Iterable[tuple[int, tuple[int, ...], str]]) -> list[int]:
    """Run `calls` (nr, args, what), in order, in as few trips as fit `batch`'s area
    (which must be empty); the result of each."""
    results: list[int] = []
    for nr, args, what in calls:
        more = batch.room()
        if more is not batch:
            results += batch.results
            batch = more
        batch.add(nr, *args, what=what)
    return results + batch.run()


class CallBatch:
    def __init__(self, inj: Injector, area: int, size: int):
        self.inj, self.area, self.size = inj, area, size
        self._data = bytearray()  # put() data, at the start of the area
        self._calls: list[tuple[int, tuple[int, ...], str]] = []
        self.results: list[int] = []

    def put(self, data: bytes) -> int:
        """Place data in the stub (8-byte aligned); returns its address there."""
        self._data += b"\0" * (-len(self._data) % 8)
        addr = self.area + len(self._data)
        self._data += data
        return addr

    def room(self, data: int = 0) -> CallBatch:
        """This batch if one more call (placing `data` more bytes with put) fits its area;
        else a new batch on the same area, once this one's calls have run (and been checked)."""
        aligned = len(self._data) + -len(self._data) % 8
        if aligned + data + 7 + (len(self._calls) + 1) * CALL_BYTES + len(INT3) <= self.size:
            return self
        self.run()
        return CallBatch(self.inj, self.area, self.size)

    def add(self, nr: int, *args: int, what: str | None) -> int:
        """Queue a call; returns its index in `results`. `what` names it in the error
        if it fails; None: the caller checks its result."""
        self._calls.append((nr, args, what))
        return len(self._calls) - 1

    def run(self) -> list[int]:
        """Run every queued call in order; raise for the first that failed; the results."""
        if not self._calls:
            return []
        slots = self.area + len(self._data) + (-len(self._data) % 8)
        code_at = slots + 8 * len(self._calls)
        code = bytearray()
        for i, (nr, args, _) in enumerate(self._calls):
            code += syscall_code(nr, args, slots + 8 * i)
        code += INT3
        if code_at + len(code) > self.area + self.size:
            raise CheckpointError(f"{len(self._calls)} batched system calls do not fit {self.size} bytes")
        blob = bytes(self._data) + b"\0" * (slots - self.area - len(self._data)) + bytes(8 * len(self._calls))
        self.inj.write(self.area, blob + bytes(code))
        self._trip(code_at)
        raw = struct.unpack(f"<{len(self._calls)}q", self.inj.read(slots, 8 * len(self._calls)))
        self.results = list(raw)
        for result, (nr, _, what) in zip(raw, self._calls):
            if what is not None and -4096 < result < 0:
                raise CheckpointError(f"{what} failed in task {self.inj.tid}: {os.strerror(-result)}")
        return self.results

    def _trip(self, entry: int) -> None:
        tid = self.inj.tid
        regs = kernel.get_regs(tid)
        regs.rip, regs.orig_rax = entry, 0xFFFFFFFFFFFFFFFF
        kernel.set_regs(tid, regs)
        kernel.ptrace(kernel.PTRACE_CONT, tid, 0, 0)
        _, status = kernel.waitpid(tid)
        while self.inj.held is not None and job_control_trap(tid, status, self.inj.held):   # as the injector does
            kernel.ptrace(kernel.PTRACE_CONT, tid, 0, 0)
            _, status = kernel.waitpid(tid)
        if not os.WIFSTOPPED(status):
            raise ProcessGone(tid, "it died running a batch of injected system calls")
        if os.WSTOPSIG(status) != signal.SIGTRAP or status >> 16:
            raise CheckpointError(f"task {tid} stopped unexpectedly (signal {os.WSTOPSIG(status)}, "
                                  f"event {status >> 16}) in a batch of injected system calls")
        kernel.set_sigmask(tid, ALL_SIGNALS)  # the forced SIGTRAP unblocked itself
