"""The page copy of a checkpoint moved out of the stop: fork snapshots.

What: `PageCopy` collects, inside a freeze window, the pages the capture chose for each
process (`selector()` wraps the capture's page selector). Those it copies inside the stop
(few pages next to its resident memory: see `_fork_is_cheaper`) are copied as soon as the
capture has chosen them (`selected()`), on the other CPU while the capture reads the
process's files, signals and threads (pageread.start_reads), into memory prepared before the freeze
(copybuffer.py); `in_stop(frozen)` waits for those copies, and for the others makes a fork
snapshot: an injected clone3 of the process's main
thread with exit signal 0 and CLONE_FILES, which the kernel gives a copy-on-write copy
of the memory of this instant. The snapshot never runs application code (it is
ptrace-stopped from its first instruction, PTRACE_O_TRACECLONE, until killed), no
SIGCHLD announces it, the application's wait() does not see it (a child without exit
signal is waited for only with __WALL or __WCLONE) and it holds no fd of its own (the
fd table is shared, so no close is delayed). After the thaw, `after_thaw()` reads the
pages from the snapshots while the processes run, kills each snapshot and has its
parent reap it (an injected wait4 in the parent's main thread alone: a second, short
stop of one thread). A snapshot killed under the copy (its PID namespace was killed: a
group killed whole) fails the checkpoint with a CheckpointError and no image is written.
A process that exits or is killed after the thaw does not: its snapshot still holds its
memory of the instant, so the image is whole (as an image copied inside the stop is when
the process dies a moment after the thaw; a short-lived compiler of a `make -j` must not
fail the group's checkpoint). `drop()` kills and reaps what is left after an error.

What a fork does not copy is read inside the stop: a mapping under MADV_DONTFORK is
missing from the snapshot and one under MADV_WIPEONFORK is empty there; both are found
by one pagemap entry of the snapshot per mapping (the first page chosen there, which the
process has and the snapshot then lacks). Shared memory is not a page of this copy (the
capture keeps MAP_SHARED memory as memfd contents, read inside the stop).
Why: copying the written pages costs ~0.6 ms per MiB inside the stop; a fork costs the
kernel's page-table copy (60-100 us per MiB of resident anonymous memory) plus ~1.5 ms (the
injected clone, the snapshot's first stop, the reap): for a large process that wrote
little (the usual incremental checkpoint) the copy is cheaper, for a full checkpoint or
a burst of writes the fork is (bench/checkpoint.py: a full checkpoint of 100 MiB).

Simplifications: an application thread blocked in wait(__WALL) may reap a snapshot
before its parent's injected wait4 does (that wait4's ECHILD is taken as done); the
snapshot is a process of the group's PID namespace for the few milliseconds of the copy
(visible in /proc there, one PID used).
"""
from __future__ import annotations

import errno
import itertools
import os
import signal
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import copier, forks, kernel, pageread, procfs
from .builder import wait_event_stop
from .capture import PageSelector, injecting
from .copybuffer import CopyBuffer
from .errors import CheckpointError
from .freeze import Frozen, FrozenProcess, exiting, main_thread_stopped, stack_scratch, syscall_insn_of
from .stopwatch import phase

RunSink = Callable[[int, int, bytes], None]   # (pid as the process sees it, address, whole pages)
CLONE_FILES = 0x400
EXIT_STOPS_MAX = 8     # stops a snapshot may make on its way to exit_group before it is SIGKILLed
# Measured on the 2-core VM at load 4-6 (/proc/PID/status RssAnon for the resident memory):
# a copy inside the stop (pageread.copy_pages, process_vm_readv) ~2-3 us per page; a fork
# 60-100 us per MiB resident plus ~0.6 ms (the injected clone3, the snapshot's first
# stop), and its reap ~0.8 ms of a second stop of the main thread.
INLINE_PAGES = 512         # up to 2 MiB: copying inside the stop always beats forking
INLINE_MAX_PAGES = 32768   # never hold more than 128 MiB copied inside the stop: fork instead
COPY_US_PER_MIB = 600
FORK_US_PER_MIB, FORK_US_FIXED = 80, 1500


@dataclass
class _Chosen:
    """One process's chosen pages, by mapping (start of the mapping, its page ranges)."""
    ns_pid: int
    by_vma: list[tuple[int, procfs.PageRanges]] = field(default_factory=list)

    @property
    def ranges(self) -> procfs.PageRanges:
        return [span for _, ranges in self.by_vma for span in ranges]


@dataclass
class Snapshot:
    pid: int          # host PID of the process
    ns_pid: int       # ... as it sees itself
    child: int        # host PID of its fork snapshot
    ns_child: int     # ... in the process's namespace (for its wait4)
    ranges: procfs.PageRanges   # the pages to copy from it


class PageCopy:
    """The pages of one checkpoint: copied inside the stop or from fork snapshots after it."""

    def __init__(self, ns_pids: dict[int, int], fork: bool = True, buffers: CopyBuffer | None = None,
                 cpus: set[int] | None = None):
        """`buffers`: where the pages copied inside the stop go (prepared before the freeze);
        `cpus`: where `selected()` may copy them meanwhile (copier.other_cpus; none: in `in_stop`)."""
        self._chosen = {pid: _Chosen(ns) for pid, ns in ns_pids.items()}
        self._fork = fork
        self._buffers = buffers
        self._cpus = cpus or set()
        self._copies: dict[int, tuple[list[pageread.Read], pageread.Reading | copier.Job]] = {}   # by host pid
        self.snapshots: list[Snapshot] = []
        self._made: list[tuple[int, list[pageread.Read]]] = []   # (ns pid, reads made in the stop)

    def selector(self, select: PageSelector) -> PageSelector:
        """`select`, with the pages it names kept here instead of copied by the capture."""
        def keep(pid: int, vma: procfs.Vma) -> None:
            ranges = select(pid, vma)
            if ranges:
                self._chosen[pid].by_vma.append((vma.start, ranges))
        return keep

    def selected(self, pid: int) -> None:
        """Every page of `pid` is chosen (capture_all's `selected`): if they are to be copied
        inside the stop rather than from a fork snapshot, start that copy now on another CPU
        (pageread.start_reads), while the capture goes on; `in_stop` waits for it."""
        chosen = self._chosen[pid]
        if not self._cpus or not chosen.by_vma or (self._fork and _fork_is_cheaper(pid, chosen)):
            return
        reads = pageread.plan(chosen.ranges, self._buffers)    # here: the worker only reads (pageread.py)
        self._copies[pid] = (reads, pageread.start_reads(pid, reads, self._cpus))

    def in_stop(self, frozen: Frozen, sink: RunSink) -> None:
        """Still frozen: copy each process's pages into `sink` now (or take the copy
        `selected` started), or fork a snapshot to copy them from after the thaw."""
        with phase("page_copy"):
            copies = self._join()   # every one first: the worker and we never share the buffers
        for pid, chosen in self._chosen.items():
            if not chosen.by_vma:
                continue
            if pid in copies:
                with phase("page_copy"):
                    pageread.read_rest(pid, copies[pid], lambda addr, data: sink(chosen.ns_pid, addr, data))
                self._made.append((chosen.ns_pid, copies[pid]))
                continue
            snapshot = None
            if self._fork and _fork_is_cheaper(pid, chosen):
                with phase("fork_snapshot"):
                    snapshot = _try_fork_snapshot(frozen.processes[pid], chosen)
            with phase("page_copy"):
                if snapshot is None:
                    _copy(pid, chosen.ns_pid, chosen.ranges, sink, self._buffers)
                    continue
                self.snapshots.append(snapshot)
                for _, ranges in chosen.by_vma:   # what the fork did not copy is read now
                    if _in_snapshot(snapshot.child, ranges[0][0]):
                        snapshot.ranges += ranges
                    else:
                        _copy(pid, chosen.ns_pid, ranges, sink, self._buffers)

    def copied(self) -> Iterator[tuple[int, int, memoryview]]:
        """(ns pid, address, pages) of each run the copies of `selected` read whole in the
        stop, cut from their buffers now (after the thaw: a Python step per run)."""
        for ns_pid, reads in self._made:
            for addr, data in pageread.runs(reads):
                yield ns_pid, addr, data

    def forget_copied(self) -> None:
        """The runs of `copied()` were handed over: let their buffers go."""
        self._made = []

    def after_thaw(self, sink: RunSink) -> None:
        """The processes run again: copy from the snapshots into `sink`, then drop them."""
        try:
            for snap in self.snapshots:
                try:
                    with phase("after_thaw_snapshot_copy"):
                        _copy(snap.child, snap.ns_pid, snap.ranges, sink)
                except (CheckpointError, OSError) as exc:
                    raise CheckpointError(f"the fork snapshot of process {snap.pid} went away while its "
                                          f"pages were copied ({exc}); no image is written") from exc
        finally:
            with phase("after_thaw_snapshot_reap"):
                self.drop()

    def _join(self) -> dict[int, list[pageread.Read]]:
        """Wait for every copy `selected` started: the reads of each, made, by host pid.
        Every one is waited for, even when one failed (then its error is raised)."""
        copies, self._copies = self._copies, {}
        made, failure = {}, None
        for pid, (reads, job) in copies.items():
            try:
                job.result()
                made[pid] = reads
            except (CheckpointError, OSError) as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return made

    def drop(self, frozen: Frozen | None = None) -> None:
        """Kill and reap every snapshot left, and wait for the copies started. Inside the
        freeze window (after an error there) pass `frozen`: the reaping wait4 is injected
        through it."""
        try:
            self._join()
        except (CheckpointError, OSError):
            pass           # the capture failed already: its error is the one to report
        snapshots, self.snapshots = self.snapshots, []
        failures: list[CheckpointError] = []
        for snap in snapshots:               # every one, whatever happens to the others
            try:
                _drop_snapshot(snap, frozen)
            except CheckpointError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]


def _copy(pid: int, ns_pid: int, ranges: procfs.PageRanges, sink: RunSink, buffers: CopyBuffer | None = None) -> None:
    pageread.copy_pages(pid, ranges, lambda addr, data: sink(ns_pid, addr, data), buffers)


def _fork_is_cheaper(pid: int, chosen: _Chosen) -> bool:
    """A fork copies page tables (FORK_US_PER_MIB of resident anonymous memory, plus
    FORK_US_FIXED with the reap); a copy inside the stop reads every page (COPY_US_PER_MIB)
    and holds them in memory until stored (INLINE_MAX_PAGES)."""
    pages = sum(procfs.range_pages(ranges) for _, ranges in chosen.by_vma)
    if pages <= INLINE_PAGES:
        return False
    if pages > INLINE_MAX_PAGES:
        return True
    copy_us = pages * kernel.PAGE_SIZE / (1 << 20) * COPY_US_PER_MIB
    anon_mib = int(procfs.frozen_status(pid).get("RssAnon", "0 kB").split()[0]) / 1024
    return FORK_US_FIXED + anon_mib * FORK_US_PER_MIB < copy_us


def _in_snapshot(child: int, page: int) -> bool:
    """Does the snapshot have this page (present or swapped)? Not under DONTFORK/WIPEONFORK."""
    with procfs.pagemap(child) as fd:
        entry = struct.unpack("Q", os.pread(fd, 8, page // kernel.PAGE_SIZE * 8))[0]
    return bool(entry & (procfs.PM_PRESENT | procfs.PM_SWAPPED))


def _try_fork_snapshot(proc: FrozenProcess, chosen: _Chosen) -> Snapshot | None:
    """A snapshot of `proc`, or None if the process refuses the clone (a seccomp filter,
    RLIMIT_NPROC, a pids cgroup full, no memory to commit) or the snapshot does not come
    up as expected (it is then killed and reaped at once): its pages are copied in the stop."""
    try:
        child = _clone(proc)
    except CheckpointError:
        return None
    snap = Snapshot(proc.pid, chosen.ns_pid, child, procfs.ns_id(procfs.status(child)["NSpid"]), [])
    try:
        _settle(proc, child)
    except (CheckpointError, OSError):
        _kill(child)
        _reap(snap, proc)
        return None
    return snap


def _clone(proc: FrozenProcess) -> int:
    """An injected clone3 of the frozen process: no exit signal, the fd table shared, and
    (PTRACE_O_TRACECLONE) traced by us from its first instruction on; its host PID."""
    tid, options = proc.main.tid, kernel.PTRACE_O_TRACESYSGOOD | kernel.SUSPEND_SECCOMP   # as freeze seized it
    kernel.ptrace(kernel.PTRACE_SETOPTIONS, tid, 0, options | kernel.PTRACE_O_TRACECLONE)
    try:
        with injecting(proc.pid, proc.main) as inj:
            args = struct.pack("11Q", CLONE_FILES, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            inj.check(kernel.NR["clone3"], inj.put(args), len(args), what="clone3 (fork snapshot)")
            forks.made_here(inj.children[0], proc.pid)
            return inj.children[0]
    finally:
        kernel.ptrace(kernel.PTRACE_SETOPTIONS, tid, 0, options)


def _settle(proc: FrozenProcess, child: int) -> None:
    """Wait for the snapshot's first stop and put back its copy of the stack scratch area
    the injection used (the process's own copy was put back by `injecting`)."""
    wait_event_stop(child)
    scratch, size = stack_scratch(proc.main.regs)
    with open(f"/proc/{proc.pid}/mem", "rb", buffering=0) as mem, \
            open(f"/proc/{child}/mem", "r+b", buffering=0) as copy:
        copy.seek(scratch)
        copy.write(os.pread(mem.fileno(), size, scratch))


def _kill(child: int) -> None:
    """End a snapshot and collect its end as its tracer: by an injected exit_group(0), so
    that whoever reaps it sees a child that exited normally (SIGKILL if that cannot be
    done). Not SIGKILL alone: the snapshot of a process that exits after the thaw is an
    orphan, re-parented to the namespace's init (or a subreaper) with SIGCHLD as its exit
    signal, and a server there that reaps an unknown child "terminated by signal 9" takes
    it for a crashed worker: PostgreSQL's postmaster then restarted every backend and ran
    crash recovery (a checkpoint as a psql session ended)."""
    try:
        regs = kernel.get_regs(child)
        regs.rip, regs.rax, regs.rdi = syscall_insn_of(child), kernel.NR["exit_group"], 0
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF            # no system call to restart
        kernel.set_regs(child, regs)
        kernel.ptrace(kernel.PTRACE_CONT, child, 0, 0)
    except (OSError, CheckpointError):
        os.kill(child, signal.SIGKILL)
    for stops in itertools.count():
        try:
            _, status = kernel.waitpid(child)
        except ChildProcessError:
            return
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return
        if stops < EXIT_STOPS_MAX:         # a signal's delivery stop on its way out: suppressed
            kernel.ptrace(kernel.PTRACE_CONT, child, 0, 0)
        elif stops == EXIT_STOPS_MAX:      # then only its death is left to collect
            os.kill(child, signal.SIGKILL)


def _drop_snapshot(snap: Snapshot, frozen: Frozen | None) -> None:
    """Kill a snapshot and have its parent reap it: an injected wait4 in the parent's main
    thread (stopped alone for it, unless `frozen` holds it). A parent that exited has no
    snapshot to reap any more (the snapshot went to the namespace's init, as orphans do)."""
    _kill(snap.child)
    try:
        if frozen is not None and snap.pid in frozen.processes:
            _reap(snap, frozen.processes[snap.pid])
        else:
            with main_thread_stopped(snap.pid, "after_thaw_reap_stop") as alone:
                _reap(snap, alone)
    except CheckpointError:          # ProcessGone, a zombie, a task exiting under PTRACE_SEIZE
        if not exiting(snap.pid):
            raise


def _reap(snap: Snapshot, proc: FrozenProcess) -> None:
    """The process (its main thread frozen) waits for its dead snapshot."""
    with injecting(snap.pid, proc.main) as inj:
        result = inj.call(kernel.NR["wait4"], snap.ns_child, 0, kernel.WALL, 0)
    if result < 0 and result != -errno.ECHILD:   # ECHILD: the application reaped it (wait with __WALL)
        raise CheckpointError(f"wait4 of the fork snapshot in process {snap.pid}: {os.strerror(-result)}")
