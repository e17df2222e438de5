"""Freeze and thaw processes with ptrace.

What: `freeze(pids)` seizes and interrupts every thread of every process (re-listing
/proc/PID/task until no new thread appears) and yields a `Frozen` holding each
thread's registers at the stop; leaving the `with` block thaws them: registers set
back (with the syscall-restart fix-up, since capture injects syscalls), signal masks
set back, signals that the freeze caught in flight re-queued, then PTRACE_DETACH.
Why: the checkpoint must see a process that does not change under it, and the
persistence-group daemon needs that window to syncfs and seal the file system.

While frozen, the stopped tasks and the calling thread are pinned to one CPU (pinning.py:
ptrace round trips cost a third of what they cost across CPUs) and the tracer runs
real-time (pinning.raise_to_realtime: no other process takes its CPU between round
trips); so do the tasks, from just before each is interrupted (`_boost`: a task waiting
for a CPU stops, and runs an injected call, only once it gets one: up to 28 ms on a busy
machine); the thaw gives every
task its CPU affinity and scheduling policy back, and the tracer its own. The image
records each process's own policy (FrozenThread.policy), not the freeze's. `Frozen.thawed_at` is when
the last task was let go (the end of the stop as the processes see it; the tracer's own
affinity and policy are given back after it).

A process found in a job-control stop (SIGSTOP, ^Z) is stopped again at the thaw by the
signal that stopped it (`FrozenProcess.stop_signal`); its parent sees it continued and
stopped once more, by that signal. A SIGSTOP that arrives while the process is frozen (our
injected calls run with every other signal blocked) is held, not delivered, and stops the
process at the thaw, unless a SIGCONT came after it (`due_stop`).

A stop makes a blocking epoll_wait fail with EINTR (signal(7): Linux does not restart it
after a stop): an event loop that waits without a timeout and takes EINTR for an error
would die at its first checkpoint. A thread found with that EINTR, waiting for ever, with no
signal pending or caught (so the stop alone ended its wait), gets the call restarted, at the
thaw and in the image (`_restart_endless_wait`). One with a timeout keeps its EINTR: a
restarted call would wait its whole timeout again, and checkpoints more often than that
would keep its timers from ever firing; event loops recompute the timeout on EINTR.

If the checkpointer itself is killed inside the window, the processes run on (ptrace lets
them go) and its watchdog (watchdog.py) gives them their own policy and affinity back.

Simplifications: must be used from one thread (ptrace's rule); a process that exits
while being frozen raises ProcessGone after thawing the others.
"""
from __future__ import annotations

import gc
import os
import signal
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from . import kernel, procfs, stopwatch, watchdog
from .errors import CheckpointError, ProcessGone, Unsupported
from .inject import SYSCALL_INSN, Injector, restart_fixup
from .kernel import Regs
from .pinning import Pinning, raise_to_realtime
from .stopwatch import phase

ALL_SIGNALS = 0xFFFFFFFFFFFFFFFF
EINTR = (-4) & 0xFFFFFFFFFFFFFFFF
NR_EPOLL_WAIT, NR_EPOLL_PWAIT, NR_EPOLL_PWAIT2 = 232, 281, 441
PF_EXITING = 0x4  # task flag (field 9 of /proc/PID/stat): the task is exiting
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)
JOB_CONTROL_STOPS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
RSEQ_CS_OFFSET = 8  # struct rseq: u32 cpu_id_start, u32 cpu_id, u64 rseq_cs (its section's descriptor)


@dataclass
class FrozenThread:
    tid: int
    regs: Regs  # as stopped, before any injection
    sigmask: int
    caught: list[bytes] = field(default_factory=list)  # siginfos taken from the queue by the stop
    touched: bool = False  # registers/mask changed by injection: set back on thaw
    restarted: bool = False  # a wait the stop ended is restarted (_restart_endless_wait)
    policy: int | None = None  # its scheduling policy while the freeze runs it real-time (_boost); None: not raised
    guarded: int | None = None  # its watchdog slot while raised (watchdog.py)
    stopped: bool = False  # in its interrupt stop (a seized thread is not until _wait_stopped)
    rseq: dict[str, int] = field(default_factory=dict)  # its rseq registration (kernel.get_rseq), read once stopped
    # its syscall user dispatch when on (kernel.get_syscall_dispatch; None: off), off while
    # it is stopped: a selector saying BLOCK would send our injected calls to the program as
    # SIGSYS; on again at the thaw. The image's too.
    dispatch: list[int] | None = None


@dataclass
class FrozenProcess:
    pid: int
    threads: dict[int, FrozenThread]
    stop_signal: int = 0   # the signal of the job-control stop it was in (SIGSTOP, SIGTSTP for ^Z, ...;
                           # 0: none): stopped again by it at the thaw, as its parent's waitid() saw it

    @property
    def stopped(self) -> bool:
        return self.stop_signal != 0

    @property
    def main(self) -> FrozenThread:
        return self.threads[self.pid]


class Frozen:
    """A set of stopped processes; `thaw()` (or leaving `freeze()`) lets them run again."""

    def __init__(self) -> None:
        self.processes: dict[int, FrozenProcess] = {}
        self.zombies: dict[int, int] = {}  # descendants that had exited: host pid -> wait status
        self.leave_stopped = False
        self._thawed = False
        self.thawed_at: float | None = None  # time.perf_counter() when the last task was let go
        # the tracer (real-time) and the stopped tasks share one CPU until the thaw
        self.pinning = Pinning(realtime=True)

    def _stop_threads(self, pid: int, tids: list[int], outside_vfork: set[int]) -> None:
        """Seize and interrupt every thread, then wait for each to stop: the threads stop
        in parallel rather than one round trip after the other. Every thread seized is
        waited for, even when seizing a later one fails. `outside_vfork`: threads just
        seen in another state than D, which a vfork() parent waits in (see `_seize`)."""
        seized: list[int] = []
        try:
            for tid in tids:
                if self._seize(pid, tid, tid not in outside_vfork):
                    seized.append(tid)
        finally:
            for tid in seized:
                self._wait_stopped(pid, tid)

    def _seize(self, pid: int, tid: int, may_be_in_vfork: bool = True) -> bool:
        """PTRACE_SEIZE + PTRACE_INTERRUPT; False if the thread exited before that. A thread
        inside vfork() is refused first, unless `may_be_in_vfork` is False (its state was
        just read, and was not D: its wchan is not read again; one that entered vfork()
        since is found by `_next_status`, as one entering it after the wchan read is)."""
        if may_be_in_vfork and _in_vfork(tid) and not _vfork_ends(tid):
            raise CheckpointError(f"process {pid} is inside vfork(), waiting for its child to exec or exit "
                                  "(it could not stop until then); try again")
        thread = FrozenThread(tid, Regs(), 0)
        try:
            kernel.ptrace(kernel.PTRACE_SEIZE, tid, 0, kernel.PTRACE_O_TRACESYSGOOD)
            _boost(thread)
            kernel.ptrace(kernel.PTRACE_INTERRUPT, tid, 0, 0)
        except ProcessLookupError:
            _unguard(thread)
            return False  # the thread exited before we got it
        except PermissionError as exc:
            _unboost(thread)
            tracer = _tracer(tid)
            if tracer == 0 and exiting(tid):
                return False    # exiting (the kernel refuses to trace a task past exit): as if gone
            if tracer != threading.get_native_id():
                raise CheckpointError(f"cannot ptrace task {tid} of process {pid}: {exc.strerror} "
                                      "(is it already traced by a debugger?)") from exc
            # made with CLONE_PTRACE by a task we had seized: the kernel attached it to us, and
            # it stops at once (PTRACE_EVENT_STOP), as an interrupted one does
        self.processes[pid].threads[tid] = thread
        return True

    def _wait_stopped(self, pid: int, tid: int) -> None:
        """Wait for a seized thread's interrupt stop; note its registers and mask, pin it."""
        thread = self.processes[pid].threads[tid]
        while True:
            status = _next_status(tid)
            if not os.WIFSTOPPED(status):
                _unguard(self.processes[pid].threads.pop(tid))
                return
            if status >> 16 == kernel.PTRACE_EVENT_STOP:
                if os.WSTOPSIG(status) in JOB_CONTROL_STOPS:
                    self.processes[pid].stop_signal = os.WSTOPSIG(status)
                break
            # a signal-delivery-stop: the signal is off the queue now; keep it to re-queue
            thread.caught.append(kernel.get_siginfo(tid))
            kernel.ptrace(kernel.PTRACE_INTERRUPT, tid, 0, 0)
            kernel.ptrace(kernel.PTRACE_CONT, tid, 0, 0)
        if kernel.SUSPEND_SECCOMP:   # only now that it is stopped: it must not run its own code unfiltered
            kernel.ptrace(kernel.PTRACE_SETOPTIONS, tid, 0, kernel.PTRACE_O_TRACESYSGOOD | kernel.SUSPEND_SECCOMP)
        thread.stopped = True
        thread.regs = kernel.get_regs(tid)
        thread.sigmask = kernel.get_sigmask(tid)
        dispatch = kernel.get_syscall_dispatch(tid)
        if dispatch[0]:
            kernel.set_syscall_dispatch(tid, kernel.SYSCALL_DISPATCH_OFF)
            thread.dispatch = dispatch
        _restart_endless_wait(thread)
        _abort_rseq_section(pid, thread)
        self.pinning.pin(tid)

    def add(self, pid: int, main_only: bool = False) -> FrozenProcess:
        """Stop every thread of `pid` (`main_only`: its main thread alone, unless it is in a
        job-control stop, which only ends for all threads at once)."""
        if pid in self.processes:
            return self.processes[pid]
        try:
            state = procfs.stat_fields(pid)[2]
        except ProcessGone:
            raise ProcessGone(pid, "no such process") from None
        if state == "Z":
            _refuse_exited_leader(pid)
            raise CheckpointError(f"process {pid} is a zombie (it has exited); nothing to checkpoint")
        proc = self.processes[pid] = FrozenProcess(pid, {})
        seen: set[int] = set()
        while True:
            every = not main_only or proc.stopped
            current = set(procfs.tids(pid)) if every else {pid}
            new = current - seen
            if not new:
                break
            self._stop_threads(pid, sorted(new), outside_vfork=set() if seen or state == "D" else {pid})
            seen |= current
            if every and procfs.thread_count(pid) == len(proc.threads):
                break   # as many threads as we hold stopped (those cannot make more): no new one
        if pid not in proc.threads:
            raise ProcessGone(pid)
        if proc.stopped:
            self._end_group_stop(proc)
        return proc

    def _end_group_stop(self, proc: FrozenProcess) -> None:
        """Let a job-control-stopped process run injected code: SIGCONT ends its group stop
        (its parent sees it continued, then stopped again at the thaw). The SIGCONT itself
        is taken off the queue at once, behind a full signal mask: the image must not hold
        it, nor a handler see it."""
        for thread in proc.threads.values():
            kernel.set_sigmask(thread.tid, ALL_SIGNALS)
            thread.touched = True
        os.kill(proc.pid, signal.SIGCONT)
        for thread in proc.threads.values():   # each seized thread traps once on the SIGCONT
            kernel.ptrace(kernel.PTRACE_CONT, thread.tid, 0, 0)
            _, status = kernel.waitpid(thread.tid)
            if not (os.WIFSTOPPED(status) and status >> 16 == kernel.PTRACE_EVENT_STOP):
                raise ProcessGone(proc.pid, "it changed state while being frozen")
        inj = Injector(proc.pid, syscall_insn_of(proc.pid), *stack_scratch(proc.main.regs), held=proc.main.caught)
        try:
            saved = inj.read(inj.scratch, 80)
            inj.take_pending(signal.SIGCONT)
            inj.write(inj.scratch, saved)
        finally:
            inj.close()

    def add_tree(self, pid: int) -> None:
        """Freeze pid and all its descendants (zombies are only recorded), until no new one appears."""
        self.add(pid)
        while True:
            found = [c for p, proc in list(self.processes.items()) for c in procfs.children(p, proc.threads)
                     if c not in self.processes and c not in self.zombies]
            if not found:
                return
            for child in found:
                try:
                    fields = procfs.stat_fields(child)
                except ProcessGone:
                    continue  # exited and reaped meanwhile
                if fields[2] in ("Z", "X"):
                    _refuse_exited_leader(child)
                    self.zombies[child] = int(fields[51])
                    continue
                try:
                    self.add(child)
                except (CheckpointError, OSError):
                    # a child exiting while we attach (EPERM, "is a zombie", vanished /proc
                    # files): the next round sees it as a zombie or not at all
                    self._forget(child)
                    if not exiting(child):
                        raise

    def _forget(self, pid: int) -> None:
        """Leave out a process found exiting while it was being frozen (its threads given
        their own policy back where they still can be)."""
        proc = self.processes.pop(pid, None)
        for thread in proc.threads.values() if proc else ():
            try:
                _unboost(thread)
            except OSError:
                pass

    def check_alive(self) -> None:
        """Raise ProcessGone if a frozen process was killed (SIGKILL ignores ptrace stops).
        One ptrace request to its main thread tells: the kernel refuses it (ESRCH) once a
        fatal signal is pending or the thread has left its stop, so a process killed a
        moment ago is seen before it has run to exit (a read of /proc/PID/stat, four system
        calls, saw it only once a zombie)."""
        for pid in self.processes:
            try:
                kernel.get_sigmask(pid)
            except ProcessLookupError:
                raise ProcessGone(pid, "it was killed while frozen") from None

    def thaw(self) -> None:
        if self._thawed:
            return
        self._thawed = True
        errors: list[str] = []
        dead: list[int] = []
        started = time.perf_counter()
        unstopped: list[FrozenThread] = []
        for proc in self.processes.values():
            ready: list[FrozenThread] = []
            # decided before _ready_to_thaw queues the caught signals again (due_stop)
            stop = signal.SIGSTOP if self.leave_stopped else due_stop(proc)
            for thread in proc.threads.values():
                if not thread.stopped:          # a freeze that failed waiting for it
                    unstopped.append(thread)
                    continue
                try:
                    self.pinning.release(thread.tid)
                    _unboost(thread)
                    if _ready_to_thaw(proc.pid, thread):
                        stop = stop or signal.SIGSTOP
                    ready.append(thread)
                except ProcessLookupError:
                    dead.append(thread.tid)
                except (OSError, CheckpointError) as exc:
                    errors.append(f"task {thread.tid}: {exc}")
            try:
                if stop:
                    os.kill(proc.pid, stop)     # acted on once it is let go
            except ProcessLookupError:
                pass                            # it has exited
            for thread in ready:
                try:
                    self.thawed_at = time.perf_counter()  # the task may run (preempting us) at once
                    kernel.detach(thread.tid)
                except ProcessLookupError:
                    dead.append(thread.tid)
                except OSError as exc:
                    errors.append(f"task {thread.tid}: {exc}")
        errors += _let_go_unstopped(unstopped, {t for p in self.processes.values() for t in p.threads})
        # the thaw as the processes see it: until the last one was let go
        stopwatch.add("thaw", ((self.thawed_at or time.perf_counter()) - started) * 1000)
        with phase("after_thaw_unpin"):  # the tracer's own CPU back: the processes already run
            self.pinning.close()
            release_dead_tracees(dead)
        if errors and not all("No such process" in e for e in errors):
            raise CheckpointError("thaw failed: " + "; ".join(errors))


def _boost(thread: FrozenThread) -> None:
    """Run a thread at the lowest real-time priority until the thaw (`_unboost`), from just
    before it is interrupted: a thread waiting for a CPU stops only once it gets one (on a
    busy machine an ordinary one was waited for up to 28 ms, one freeze in 100 at load 7,
    2026-11-30), and each injected call waits for the thread to run it. A thread already
    real-time, that we may not change, or that no watchdog guards (watchdog.py: it gives the
    policy back if we die before the thaw) is left as it is."""
    policy = os.sched_getscheduler(thread.tid)
    if policy & ~os.SCHED_RESET_ON_FORK not in (os.SCHED_OTHER, os.SCHED_BATCH, os.SCHED_IDLE):
        return
    thread.guarded = watchdog.guard(thread.tid, policy)
    if thread.guarded is None:
        return
    try:
        raise_to_realtime(thread.tid)
    except PermissionError:
        _unguard(thread)
        return
    thread.policy = policy


def _unboost(thread: FrozenThread) -> None:
    """Give a thread `_boost` raised its own scheduling policy back (its nice value was kept)."""
    if thread.policy is not None:
        try:
            os.sched_setscheduler(thread.tid, thread.policy, os.sched_param(0))
        finally:
            _unguard(thread)


def _unguard(thread: FrozenThread) -> None:
    """The thread needs no watchdog any more (its policy given back, or it is gone)."""
    watchdog.release(thread.guarded)
    thread.policy = thread.guarded = None


_unreleased: set[int] = set()   # killed tracees still ours (see release_dead_tracees)
RELEASE_WAIT_S = 2.0


def release_dead_tracees(tids: list[int]) -> None:
    """Collect tasks that were killed while we traced them. A dead tracee stays a zombie
    reported to its tracer until the tracer waits for it: its parent cannot reap it, and a
    PID-namespace init that was killed cannot finish exiting until every child of it is
    reaped (seen as `sls stop` waiting 10 s for a killed group). Tasks that are still
    exiting after RELEASE_WAIT_S are retried at the next thaw."""
    pending = set(tids) | _unreleased
    deadline = time.monotonic() + RELEASE_WAIT_S
    while pending:
        for tid in list(pending):
            try:
                done, _ = kernel.waitpid(tid, kernel.WALL | os.WNOHANG)
            except ChildProcessError:       # not ours any more (released, or reaped)
                done = tid
            if done == tid or not exiting(tid):     # collected, or alive: nothing to collect
                pending.discard(tid)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    _unreleased.clear()
    _unreleased.update(pending)


def exiting(pid: int) -> bool:
    """True if `pid` is gone, a zombie, or on its way out: PF_EXITING, or a SIGKILL
    pending that it has not run to act on yet (it may wait for a CPU: see pinning.py)."""
    try:
        fields = procfs.stat_fields(pid)
        status = procfs.status(pid)
    except (ProcessGone, OSError):
        return True
    pending = int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
    return fields[2] in ("Z", "X") or bool(int(fields[8]) & PF_EXITING) or bool(pending & SIGKILL_BIT)


def _ready_to_thaw(pid: int, thread: FrozenThread) -> bool:
    """Everything but the detach: registers, mask and caught signals put back (a SIGSTOP
    caught is not queued again: the thaw stops the process by `due_stop`). True if a
    SIGSTOP arrived meanwhile (held by the injection that queues the others again): it came
    after every signal `due_stop` weighed, so the process is due to stop."""
    tid = thread.tid
    held = len(thread.caught)
    if thread.touched or thread.caught or thread.restarted:
        if any(info[0] != signal.SIGSTOP for info in thread.caught):
            _requeue(pid, thread)
        kernel.set_regs(tid, restart_fixup(thread.regs, same_task=True))
        kernel.set_sigmask(tid, thread.sigmask)
    if thread.dispatch:                      # after the last injected call
        kernel.set_syscall_dispatch(tid, thread.dispatch)
    return _last_job_control(thread.caught[held:]) == signal.SIGSTOP


def due_stop(proc: FrozenProcess, queued: set[int] | None = None) -> int:
    """The job-control stop `proc` is due to be in once let go, as its signals stand (0:
    none). `queued`: the numbers of the signals in its kernel queues, not counting those the
    freeze caught (None: read from /proc; so call it before the caught ones are queued again).
    The signals' order decides, as the kernel's own rules give it: a stop signal's arrival
    takes the queued SIGCONTs away, and a SIGCONT's the queued stop signals, so a SIGCONT
    still queued came after every stop signal (not stopped: stress-ng --kill stops and
    continues its workers in a loop) and a queued SIGSTOP after every SIGCONT (stopped);
    then the job-control signals the freeze caught, in each thread's order of arrival: a
    SIGSTOP last (held from an injection: inject.py, or caught by the freeze) stops it, a
    SIGCONT last continues it (its parent sent SIGCONT then SIGSTOP: the SIGCONT is queued
    again at the thaw, so only this order tells them apart); else the stop it was found in
    (`stop_signal`: stopped again by the same signal, whose handling cannot have changed
    while it was stopped)."""
    last_caught = {last for thread in proc.threads.values() if (last := _last_job_control(thread.caught))}
    if not (proc.stop_signal or last_caught or queued):
        return 0            # nothing to stop it by: /proc is not read
    if queued is None:
        queued = queued_signals(proc)
    if signal.SIGCONT in queued:
        return 0
    if signal.SIGSTOP in queued or signal.SIGSTOP in last_caught:
        return proc.stop_signal or signal.SIGSTOP
    return 0 if last_caught else proc.stop_signal


def _last_job_control(caught: list[bytes]) -> int:
    """The last SIGSTOP or SIGCONT among a thread's caught siginfos (0: none)."""
    return next((info[0] for info in reversed(caught) if info[0] in (signal.SIGSTOP, signal.SIGCONT)), 0)


def queued_signals(proc: FrozenProcess) -> set[int]:
    """The numbers of the signals queued to the process or to any of its frozen threads
    (those still there)."""
    bits = 0
    for thread in proc.threads.values():
        try:
            status = procfs.status(thread.tid)
        except ProcessGone:
            continue
        bits |= int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
    return {signo for signo in range(1, 65) if bits >> (signo - 1) & 1}


def _restart_endless_wait(thread: FrozenThread) -> None:
    """If the stop ended the thread's endless epoll wait with EINTR (see the module's
    docstring), make its registers those of a wait to restart (-ERESTARTNOHAND): what the
    thaw and a restore do with a call a stop interrupted (inject.restart_fixup)."""
    regs = thread.regs
    if regs.rax != EINTR or thread.caught or not _waits_for_ever(regs):
        return
    status = procfs.status(thread.tid)     # (its own SigPnd; ShdPnd and SigBlk as any thread)
    pending = int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
    if pending & ~int(status.get("SigBlk", "0"), 16):
        return                      # a signal ended the wait: its handler is owed the EINTR
    regs = regs.copy()
    regs.rax = -kernel.ERESTARTNOHAND & 0xFFFFFFFFFFFFFFFF
    thread.regs, thread.restarted = regs, True


def _abort_rseq_section(pid: int, thread: FrozenThread) -> None:
    """If the thread stopped inside a restartable sequence's critical section (rseq(2)),
    make its registers those the kernel gives it when it aborts the section: its IP at the
    section's abort handler. The kernel would do that at the thread's return to user space
    after the stop, but our injected calls return to user space elsewhere first, and there
    the kernel only clears the area's rseq_cs: the thread then ran the section to its end,
    its commit unguarded (zdtm's transition/rseq01), as a restore from the image did."""
    thread.rseq = kernel.get_rseq(thread.tid)     # also the image's (capture reads it here)
    pointer = thread.rseq["pointer"]
    if not pointer:
        return
    try:     # (a process exiting has no memory left: the read is empty; the freeze finds it gone)
        [cs] = struct.unpack("Q", procfs.read_memory(pid, pointer + RSEQ_CS_OFFSET, 8))
    except (OSError, struct.error):
        return
    if not cs:
        return
    try:     # struct rseq_cs: u32 version, u32 flags, u64 start_ip, post_commit_offset, abort_ip
        _version, _flags, start, length, abort = struct.unpack("IIQQQ", procfs.read_memory(pid, cs, 32))
    except (OSError, struct.error):
        return   # not a descriptor: the kernel kills the thread at its return, as it will here
    if start <= thread.regs.rip < start + length:
        regs = thread.regs.copy()
        regs.rip = abort
        thread.regs, thread.touched = regs, True


def _waits_for_ever(regs: Regs) -> bool:
    """An epoll_wait (or epoll_pwait/epoll_pwait2 without a signal mask of its own: with
    one, the mask the call set is the thread's until it returns) without a timeout."""
    no_timeout = regs.r10 & 0xFFFFFFFF >= 0x80000000           # int timeout < 0
    if regs.orig_rax in (NR_EPOLL_WAIT, NR_EPOLL_PWAIT):
        return no_timeout and (regs.orig_rax == NR_EPOLL_WAIT or regs.r8 == 0)
    return regs.orig_rax == NR_EPOLL_PWAIT2 and regs.r10 == 0 and regs.r8 == 0   # timeout: a NULL timespec


def _requeue(pid: int, thread: FrozenThread) -> None:
    """Queue the signals the freeze took off a thread back, from inside it."""
    ns_pid = procfs.ns_id(procfs.frozen_status(pid)["NSpid"])
    ns_tid = procfs.ns_id(procfs.frozen_status(thread.tid)["NSpid"])
    kernel.set_sigmask(thread.tid, ALL_SIGNALS)
    inj = Injector(thread.tid, syscall_insn_of(pid), *stack_scratch(thread.regs), held=thread.caught)
    try:
        saved = inj.read(inj.scratch, kernel.SIGINFO_SIZE)
        for info in [info for info in thread.caught if info[0] != signal.SIGSTOP]:
            inj.check(kernel.NR["rt_tgsigqueueinfo"], ns_pid, ns_tid, info[0], inj.put(info),
                      what="re-queue a signal")
        inj.write(inj.scratch, saved)
    finally:
        inj.close()


def stack_scratch(regs: Regs) -> tuple[int, int]:
    """A scratch area just below the red zone of a stopped thread's stack."""
    size = 1024
    return (regs.rsp - 128 - size) & ~0xF, size


AT_SYSINFO_EHDR = 33
_vdso_syscall_offset: int | None = None   # the same in every process: one kernel, one vdso image


def syscall_insn_of(pid: int) -> int:
    """Address of a `syscall` instruction in the process's [vdso]. Its offset in the vdso
    is found once (a scan of the mapping); after that the vdso's address comes from the
    auxiliary vector and the two bytes are checked, which is cheaper than reading the
    whole memory map at every injection. Inside a freeze window: once per process."""
    return procfs.once_per_window("syscall_insn", pid, _find_syscall_insn)


def _find_syscall_insn(pid: int) -> int:
    global _vdso_syscall_offset
    if _vdso_syscall_offset is not None:
        base = _vdso_base(pid)
        try:
            if base is not None and procfs.read_memory(pid, base + _vdso_syscall_offset, 2) == SYSCALL_INSN:
                return base + _vdso_syscall_offset
        except OSError:     # EIO: the auxiliary vector names a vdso the program has unmapped
            pass
    maps = procfs.maps(pid)
    for vma in maps:
        if vma.path == "[vdso]":
            index = procfs.read_memory(pid, vma.start, vma.end - vma.start).find(SYSCALL_INSN)
            if index >= 0:
                _vdso_syscall_offset = index
                return vma.start + index
    for vma in maps:    # no [vdso] (unmapped by the program): the two bytes in its own code
        if "x" in vma.perms and "r" in vma.perms and vma.path not in ("[vsyscall]", "[uprobes]"):
            index = procfs.read_memory(pid, vma.start, vma.end - vma.start).find(SYSCALL_INSN)
            if index >= 0:
                return vma.start + index
    raise CheckpointError(f"process {pid} has no [vdso] or code with a syscall instruction to inject with")


def _vdso_base(pid: int) -> int | None:
    vector = procfs.auxv(pid)
    for i in range(0, len(vector) - 15, 16):
        key, value = struct.unpack_from("QQ", vector, i)
        if key == AT_SYSINFO_EHDR:
            return value
    return None


@contextmanager
def freeze(pids: list[int], *, tree: bool = False, leave_stopped: bool = False,
           main_thread_only: bool = False) -> Iterator[Frozen]:
    """Stop every thread of `pids` (with `tree`, of all their descendants); thaw on exit.

    `leave_stopped` leaves them in a SIGSTOP group-stop instead of running.
    `main_thread_only` (without `tree`) stops only each process's main thread, the others
    run on: enough for an injected call that touches nothing they use (snapshot.py's wait4).
    """
    frozen = Frozen()
    frozen.leave_stopped = leave_stopped
    with procfs.window(), _collector_paused():
        try:
            with phase("freeze"):
                for pid in pids:
                    if tree:
                        frozen.add_tree(pid)
                    else:
                        frozen.add(pid, main_thread_only)
            yield frozen
        finally:
            frozen.thaw()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off until the block ends (and the processes are
    thawed), if it was on: a collection the stop's allocations would trigger runs after
    the thaw instead (bench/checkpoint.py --stop-only, 10 MiB: one young collection in 20
    stops, 0.19 ms of that stop; a daemon's old generations hold far more objects).
    Process-wide: the daemon's other threads collect after the thaw too."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def main_thread_stopped(pid: int, recorded_as: str) -> Iterator[FrozenProcess]:
    """`pid` with its main thread alone frozen (the others run on), for an injected call
    outside a checkpoint's stop (freeze's `main_thread_only`). The short stop is recorded
    as the stopwatch phase `recorded_as`; the freeze's own phases are not recorded."""
    started = time.perf_counter()
    with stopwatch.recording():
        with freeze([pid], main_thread_only=True) as alone:
            yield alone.processes[pid]
    stopwatch.add(recorded_as, ((alone.thawed_at or time.perf_counter()) - started) * 1000)


def _refuse_exited_leader(pid: int) -> None:
    """Raise Unsupported if `pid`, a zombie, is only its main thread: it called
    pthread_exit and other threads of it still run (they would be lost as a zombie)."""
    try:
        running = [tid for tid in procfs.tids(pid) if tid != pid and procfs.stat_fields(tid)[2] not in ("Z", "X")]
    except ProcessGone:       # reaped, or a thread gone meanwhile: exiting, not running
        return
    if running:
        raise Unsupported(f"process {pid}: its main thread has exited (pthread_exit) while its other "
                          "threads run; such a process cannot be checkpointed yet")


VFORK_WAIT_S = 0.05
STOP_WAIT_S = 10.0        # a seized task not in its interrupt stop by then fails the freeze
STOP_POLL_MAX_S = 0.001   # the longest pause between two looks at a task not stopped yet (once
                          # reached, ~2 ms in, whether it sleeps in vfork() is asked too)


def _next_status(tid: int, in_vfork_fails: bool = True) -> int:
    """The next wait status of a seized task (most have stopped by the time we ask). One
    that sleeps inside vfork() stops only once its child execs or exits: when that child
    is one we froze (stress-ng --clone: CLONE_VFORK | CLONE_PARENT), never; so a task
    still in vfork() after VFORK_WAIT_S (`in_vfork_fails`), or not stopped after
    STOP_WAIT_S, fails the freeze with its reason (thaw() lets it go once it stops)."""
    deadline, pause = time.monotonic() + STOP_WAIT_S, 0.00002
    while True:
        done, status = kernel.waitpid(tid, kernel.WALL | os.WNOHANG)
        if done:
            return status
        if in_vfork_fails and pause >= STOP_POLL_MAX_S and _in_vfork(tid) and not _vfork_ends(tid):
            raise CheckpointError(f"task {tid} is inside vfork(), waiting for its child to exec or exit, "
                                  "and could not stop until then; try again")
        if time.monotonic() > deadline:
            raise CheckpointError(f"task {tid} did not stop within {STOP_WAIT_S:.0f} s of its interrupt "
                                  f"(it sleeps in {_wchan(tid)}); try again")
        time.sleep(pause)
        pause = min(pause * 2, STOP_POLL_MAX_S)


_awaiting_detach: set[int] = set()   # seized tasks that had still not stopped at their thaw


def _let_go_unstopped(threads: list[FrozenThread], ours: set[int]) -> list[str]:
    """After the others were let go: detach each thread that was seized but had not stopped
    yet when the freeze failed (a vfork() parent stops once the child we froze runs on),
    once it stops. One that has not within STOP_WAIT_S is detached at a later thaw, or it
    would stay stopped for ever once it stops."""
    errors = []
    for tid in list(_awaiting_detach):
        _detach_when_stopped(tid, wait=False)
    for thread in threads:
        try:
            _unboost(thread)
        except OSError:
            pass
        _release_strays(thread.tid, ours)
        try:
            _detach_when_stopped(thread.tid, wait=True)
        except CheckpointError as exc:
            _awaiting_detach.add(thread.tid)
            errors.append(f"task {thread.tid}: {exc}")
    return errors


def _release_strays(tid: int, ours: set[int]) -> None:
    """Let go of the children of `tid` (and of its parent: CLONE_PARENT) that are traced by
    us but not part of the freeze (`ours`): a child made with CLONE_PTRACE by a task we had
    seized is attached to us by the kernel, stopped; if it is the vfork child `tid` waits
    for, `tid` can only stop once it runs."""
    try:
        near = {*procfs.children(tid), *procfs.children(int(procfs.stat_fields(tid)[3]))}
    except ProcessGone:
        return
    for child in near - ours:
        if _tracer(child) == threading.get_native_id():
            _detach_when_stopped(child, wait=True)


def _tracer(tid: int) -> int:
    """The task tracing `tid` (0: none, or gone): a thread id, the thread that attached it
    (ptrace is per thread: in the daemon, its tracer thread, not its main thread)."""
    try:
        with open(f"/proc/{tid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))
    except (OSError, StopIteration):
        return 0


def _detach_when_stopped(tid: int, wait: bool) -> None:
    try:
        if wait:
            status = _next_status(tid, in_vfork_fails=False)
        else:
            done, status = kernel.waitpid(tid, kernel.WALL | os.WNOHANG)
            if not done:
                return
        _awaiting_detach.discard(tid)
        if os.WIFSTOPPED(status):
            kernel.detach(tid)
    except (ChildProcessError, ProcessLookupError):
        _awaiting_detach.discard(tid)           # it exited meanwhile


def _wchan(tid: int) -> str:
    try:
        return procfs.read_file(f"/proc/{tid}/wchan").decode() or "?"
    except OSError:
        return "?"


def _vfork_ends(tid: int) -> bool:
    """Whether a task inside vfork() leaves it within VFORK_WAIT_S: a shell's vfork child
    usually execs within a millisecond, and a shell enters vfork() at every command it
    runs (refusing at once failed some periodic checkpoints of a shell script's group)."""
    deadline = time.monotonic() + VFORK_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.0002)
        if not _in_vfork(tid):
            return True
    return False


def _in_vfork(tid: int) -> bool:
    """Whether the task sleeps inside clone(): a vfork() parent until its child execs or
    exits, a wait no ptrace stop interrupts (a checkpoint would wait for it, forever if
    the child never execs)."""
    return _wchan(tid) == "kernel_clone"
