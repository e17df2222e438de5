"""Keep a tracer and its stopped tracees on one CPU while they talk.

What: `Pinning` moves the calling thread and every task handed to `pin(tid)` onto the
CPU the caller runs on, remembering each one's CPU affinity; `release(tid)` and
`close()` put the affinities back. Tasks created while pinned inherit the pinning;
`adopt(tid)` gives them the caller's own affinity back on release.
Why: every ptrace round trip (an injected syscall is four) wakes the tracee and then
the tracer. Across two CPUs of a VM each wake-up is an inter-processor interrupt:
measured here, an injected syscall costs ~270 us across CPUs and ~80 us on one CPU.
The stop of a checkpoint and the build of a restore are mostly such round trips.
With `realtime=True` (the freeze uses it) the calling thread also runs real-time
(`raise_to_realtime`) until `close()`: on a busy machine each round trip
otherwise risks a whole time slice of some other process on our CPU before the tracer
runs again (seen: a 5-thread Redis stop lost ~2.5 ms to it under load 4); a thawed task
cannot preempt the tracer either while it lets the next one go.

A task's own affinity is noted with the watchdog (watchdog.py) before it is pinned: if the
tracer dies while the task is pinned, the watchdog gives it back; a task no watchdog can
guard is not pinned.

Simplifications: affinity only (not cgroup cpusets: a CPU the cpuset forbids makes
pinning a no-op, never an error); a task that exits while pinned is simply forgotten.
"""
from __future__ import annotations

import ctypes
import os

from . import watchdog

_libc = ctypes.CDLL(None, use_errno=True)


class Pinning:
    """The calling thread pinned to its current CPU, with tasks joining it; `close()` undoes it."""

    def __init__(self, realtime: bool = False) -> None:
        # real-time first, then pinned where we run: a thread that moved to the other CPU
        # between sched_getcpu and the pinning is moved back by the pinning, and as an
        # ordinary thread it then waits there for a time slice of whatever runs on that CPU
        # (a tail of several ms before a Redis freeze under load; ~0.04 ms real-time first)
        self.policy = _realtime() if realtime else None  # our scheduling policy before, if raised
        self.cpu = _libc.sched_getcpu()
        self.saved: dict[int, tuple[set[int], int]] = {}   # tid -> (its own affinity, watchdog slot)
        self.own = _set(0, {self.cpu}) if self.cpu >= 0 else None  # our affinity before

    def pin(self, tid: int) -> None:
        """Run task `tid` on our CPU until released (no-op if that is not allowed)."""
        if self.own is None or tid in self.saved:
            return
        try:
            before = os.sched_getaffinity(tid)
        except OSError:
            return
        slot = watchdog.guard(tid, cpus=before)
        if slot is None:
            return
        try:
            os.sched_setaffinity(tid, {self.cpu})
        except OSError:  # gone, or a CPU its cpuset forbids
            watchdog.release(slot)
            return
        self.saved[tid] = (before, slot)

    def adopt(self, tid: int) -> None:
        """A task born of a pinned one (it inherited the pinning): on release it gets the
        affinity the caller had before pinning, as if it had been born of the caller."""
        if self.own is not None and tid not in self.saved:
            self.saved[tid] = (self.own, watchdog.guard(tid, cpus=self.own))

    def release(self, tid: int) -> None:
        """Give task `tid` its own CPU affinity back."""
        saved = self.saved.pop(tid, None)
        if saved is not None:
            try:        # (not _set: the affinity it has now is not needed, a system call fewer per task)
                os.sched_setaffinity(tid, saved[0])
            except OSError:  # gone, or a CPU its cpuset forbids
                pass
            watchdog.release(saved[1])

    def release_tasks(self) -> None:
        """Give every task its own CPU affinity back (the caller stays pinned)."""
        for tid in list(self.saved):
            self.release(tid)

    def realtime(self) -> None:
        """From now until close(): the calling thread runs real-time, as with
        `realtime=True` (restore raises it only to let its tasks go: a task let go on our
        CPU would otherwise take it, for a time slice, before we let the next one go)."""
        if self.policy is None:
            self.policy = _realtime()

    def close(self) -> None:
        self.release_tasks()
        if self.policy is not None:
            os.sched_setscheduler(0, self.policy[0], os.sched_param(self.policy[1]))
            self.policy = None
        if self.own is not None:
            os.sched_setaffinity(0, self.own)
            self.own = None


def _set(tid: int, cpus: set[int]) -> set[int] | None:
    """Set a task's affinity; returns the previous one, or None if it could not be changed."""
    try:
        before = os.sched_getaffinity(tid)
        os.sched_setaffinity(tid, cpus)
    except OSError:  # gone, or a CPU its cpuset forbids
        return None
    return before


def raise_to_realtime(tid: int) -> None:
    """Run task `tid` (0: the calling thread) as every real-time raise of the checkpointer
    does (the tracer, its page copier and native worker, the frozen tasks): the lowest
    real-time priority, not kept by a fork, round-robin. Not FIFO: all of them share a CPU at
    one priority, and a FIFO task busy in the kernel waiting for another of them never lets it
    run. Seen: the tracer spinning in d_invalidate (opening /proc of a dying task) for a
    dentry that a stopped task pinned to its CPU was to free, for ever; a round-robin task
    gives way at the end of its 100 ms slice. OSError if not allowed."""
    os.sched_setscheduler(tid, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(1))


def _realtime() -> tuple[int, int] | None:
    """Raise the calling thread (`raise_to_realtime`); returns its policy and priority
    before, or None if that is not allowed."""
    try:
        before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        raise_to_realtime(0)
    except OSError:
        return None
    return before
