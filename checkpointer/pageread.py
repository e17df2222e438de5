"""Reading a process's pages: planned in one thread, read in another, cut into runs later.

What: `plan(ranges, buffers)` turns page ranges into `Read`s, each one process_vm_readv
of up to IOV_MAX runs (READ_BATCH_BYTES) into its own buffer, its arguments built at
once; `read_all(pid, reads)` makes those calls and nothing else; `read_rest(pid, reads,
sink)` reads, through /proc/PID/mem, the runs of a read that did not get its whole size;
`runs(reads)` gives the runs of the others (memoryviews of their buffers). `copy_pages`
does all of it in a row. `start_reads(pid, reads, cpus)` has read_all's calls made on
another CPU: by the native worker (nativeworker.py), which holds no Python lock at all.
Why: the pages a stop copies are read on the other CPU (copier.py, snapshot.PageCopy)
while the tracer captures the rest. A worker that also built the calls' arguments and cut
the buffer into runs held Python's lock for that work, and the tracer waited for the lock
after its own system calls: 1.2-1.9 ms of a Redis stop (16 MiB, 50 clients, ~600 runs
copied per stop) were spent idle in the tracer (its wall time in the freeze less its CPU
time, load 6-9; 0.3 ms with the copy done by the tracer itself; one wait of 2.6 ms under
strace). Now the worker runs `read_all` alone (a few Python steps around calls that let
go of the lock), `plan` is array and map steps, and the runs are cut after the thaw; the
native worker does away with even those steps (the Python worker is the fallback).

Simplifications: a buffer taken for a read that fails is not given back (the fallback
reads into fresh bytes).
"""
from __future__ import annotations

import array
import bisect
import ctypes
import itertools
import operator
import os
from dataclasses import dataclass
from typing import Callable, Iterator

from . import copier, kernel, nativeworker, procfs
from .copybuffer import CopyBuffer
from .errors import CheckpointError, ProcessGone

MAX_RUN = 256 * kernel.PAGE_SIZE
IOV_MAX = 1024                   # iovecs per process_vm_readv
READ_BATCH_BYTES = 8 << 20       # memory read by one process_vm_readv at most
NR_PROCESS_VM_READV = 310
_libc = ctypes.CDLL(None, use_errno=True)
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                                   ctypes.c_ulong, ctypes.c_ulong]


@dataclass
class Read:
    """One process_vm_readv, ready to be made: runs at `starts`, of `lengths` bytes, into `buffer`."""
    starts: array.array
    lengths: array.array
    buffer: bytearray | memoryview
    local: ctypes.Array          # the one local iovec (the buffer)
    remote: array.array          # (base, length) pairs, one per run
    done: int = -1               # bytes the call read (-1: not made, or failed)


def plan(ranges: procfs.PageRanges, buffers: CopyBuffer | None = None) -> list[Read]:
    """The reads that copy the pages in `ranges`, each into a buffer taken from `buffers`
    (memory made ready before a freeze, see copybuffer.py) or a new bytearray. Built with
    array and map steps, not a Python step per run: it runs inside the stop (~600 runs
    for Redis under load: 0.4-1.6 ms with one Python loop per run over them, cold)."""
    starts, lengths = _runs(ranges)
    ends = list(itertools.accumulate(lengths))   # bytes up to the end of each run
    reads, at = [], 0
    while at < len(starts):
        before = ends[at - 1] if at else 0
        stop = min(len(starts), at + IOV_MAX, max(at + 1, bisect.bisect_right(ends, before + READ_BATCH_BYTES, at)))
        size = ends[stop - 1] - before
        buffer = buffers.take(size) if buffers is not None else bytearray(size)
        local = (ctypes.c_uint64 * 2)(ctypes.addressof(ctypes.c_char.from_buffer(buffer)), size)   # (no array type per size)
        remote = array.array("Q", bytes(16 * (stop - at)))
        remote[0::2], remote[1::2] = starts[at:stop], lengths[at:stop]
        reads.append(Read(starts[at:stop], lengths[at:stop], buffer, local, remote))
        at = stop
    return reads


def read_all(pid: int, reads: list[Read]) -> None:
    """Make every read of `pid`'s memory (each call lets go of Python's lock)."""
    for read in reads:
        read.done = _libc.process_vm_readv(pid, read.local, 1, read.remote.buffer_info()[0], len(read.starts), 0)


class Reading:
    """Reads made by the native worker (nativeworker.py): `result()` waits for them."""

    def __init__(self, batch: nativeworker.Batch, reads: list[Read]) -> None:
        self.batch, self.reads = batch, reads

    def result(self) -> None:
        for read, done in zip(self.reads, self.batch.results()):
            read.done = done        # bytes read, or -errno


def start_reads(pid: int, reads: list[Read], cpus: set[int]) -> "Reading | copier.Job":
    """`read_all(pid, reads)` begun on `cpus`: by the native worker, which needs no Python
    lock (nativeworker.py), or else by the copier's Python worker (copier.py); the returned
    job's `result()` waits until they are made."""
    calls = [(NR_PROCESS_VM_READV, (pid, ctypes.addressof(read.local), 1, read.remote.buffer_info()[0],
                                    len(read.starts), 0)) for read in reads]
    batch = nativeworker.submit(calls, cpus, keep=reads)
    if batch is None:
        return copier.submit(lambda: read_all(pid, reads), cpus)
    return Reading(batch, reads)


def read_rest(pid: int, reads: list[Read], sink: Callable[[int, bytes], None]) -> None:
    """Hand to `sink(start, data)` the runs of every read (made by read_all) that did not
    get its whole size, read now run by run through /proc/PID/mem: process_vm_readv
    honours protections (a PROT_NONE mapping with data), /proc/PID/mem does not. A run that
    cannot be read either is refused by name if it holds guard pages (a scan reported one
    as written). While the process is still frozen: the pages are those of the instant."""
    failed = [read for read in reads if read.done != len(read.buffer)]
    if not failed:
        return
    mem = _open_mem(pid)
    try:
        for read in failed:
            for start, length in zip(read.starts, read.lengths):
                data = os.pread(mem, length, start)
                if len(data) != length:
                    procfs.check_no_guard_pages_in(pid, start, start + length)
                    raise CheckpointError(f"could not read memory {start:#x}+{length // kernel.PAGE_SIZE} pages "
                                          f"of process {pid}")
                sink(start, data)
    finally:
        os.close(mem)


def runs(reads: list[Read]) -> Iterator[tuple[int, memoryview]]:
    """(start, data) of each run of the reads that got their whole size: memoryviews of
    their buffers (cut after the thaw: a Python step per run)."""
    for read in reads:
        if read.done == len(read.buffer):
            view, at = memoryview(read.buffer), 0
            for start, length in zip(read.starts, read.lengths):
                yield start, view[at:at + length]
                at += length


def copy_pages(pid: int, ranges: procfs.PageRanges, sink: Callable[[int, bytes], None],
               buffers: CopyBuffer | None = None) -> None:
    """Hand the pages in `ranges` to `sink(start, data)` in runs, read here (plan,
    read_all, read_rest, runs): one system call per IOV_MAX runs instead of a pread of
    /proc/PID/mem per run (~5 us each, most runs being one page)."""
    reads = plan(ranges, buffers)
    read_all(pid, reads)
    read_rest(pid, reads, sink)
    for start, data in runs(reads):
        sink(start, data)


def _open_mem(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc


def _runs(ranges: procfs.PageRanges) -> tuple[array.array, array.array]:
    """(starts, lengths in bytes) of runs of at most MAX_RUN bytes covering `ranges`,
    adjacent ranges joined. Scans give disjoint ranges, joined already within a mapping:
    ranges touch only across mappings, and few are longer than MAX_RUN, so both are found
    by C-level passes and only those few take a Python step (a Redis stop under load: 360-800
    ranges, most stops with some touching: a Python step per range then took 160-340 us, this 85-185)."""
    if not ranges:
        return array.array("Q"), array.array("Q")
    starts, ends = (array.array("Q", bounds) for bounds in zip(*ranges))
    if any(map(operator.eq, ends, starts[1:])):      # range i continues range i-1: drop its start and the previous end
        continued = bytearray(len(starts) + 1)
        for i in itertools.compress(range(1, len(starts)), map(operator.eq, ends, starts[1:])):
            continued[i] = 1
        starts = array.array("Q", itertools.compress(starts, map(operator.not_, continued)))
        ends = array.array("Q", itertools.compress(ends, map(operator.not_, continued[1:])))
    lengths = array.array("Q", map(operator.sub, ends, starts))
    if max(lengths) <= MAX_RUN:
        return starts, lengths
    cut_starts, cut_lengths = array.array("Q"), array.array("Q")
    done = 0
    for i in itertools.compress(range(len(lengths)), map(MAX_RUN.__lt__, lengths)):
        cut_starts += starts[done:i]
        cut_lengths += lengths[done:i]
        pieces = range(starts[i], ends[i], MAX_RUN)
        cut_starts.extend(pieces)
        cut_lengths.extend(min(MAX_RUN, ends[i] - at) for at in pieces)
        done = i + 1
    cut_starts += starts[done:]
    cut_lengths += lengths[done:]
    return cut_starts, cut_lengths
