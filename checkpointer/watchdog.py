"""Give tasks their own scheduling back if the tracer dies while it holds them.

What: before the tracer raises a task to real-time (freeze._boost) or pins it to one CPU
(pinning.py), `guard(tid, ...)` writes the task's own policy, priority and CPU affinity
into a table shared with a watchdog process; `release(slot)` drops the entry once the task
has them back. The watchdog, a child of the tracer process started at the first `guard`
(or by `start()`, before a stop), sleeps in poll() on a pidfd of the tracer; when the
tracer dies with entries left (SIGKILLed inside a stop), it sets each of those tasks'
policy and affinity back, then exits. It also exits, doing nothing, when the tracer ends
cleanly (the table is empty then). "Dies" is also its main thread's exit, which a SIGKILL
brings at once (looked at each DYING_CHECK_S: a pidfd tells only once every thread has
exited), while a thread of the tracer busy in the kernel may take long to follow. Seen:
the tracer thread, real-time, spinning in d_invalidate (opening /proc of a dying task) for
a dentry that a stopped task pinned to its CPU was to free (pinning.raise_to_realtime).
So the watchdog also puts the tracer's threads left at a real-time policy back to
SCHED_OTHER, and the tasks it guards then run on their own CPUs.
Why: a tracer killed inside a stop leaves the application's threads real-time and pinned
to one CPU for ever (ptrace lets them run on; scheduling is not ptrace state): a
CPU-bound thread then takes up to 95% of that CPU (RT throttling) until it is killed.

The table is a memfd mapped by both: the tracer writes an entry with two stores (no
system call inside the stop, ~2 us), the watchdog reads it only once the tracer is gone,
so no locking is needed. An entry is written before the change it undoes: a tracer killed
between the two leaves a task whose own scheduling is set again, which changes nothing.
`guard` answers None when no watchdog can guard the task (it could not be started, the
table is full): the caller then leaves the task's scheduling alone.

Format (memory only, between a tracer and the watchdog it started from this file; never
stored): a little-endian u64 count of entries, then entries of ENTRY: tid (i32, 0 for a
released entry), policy (i32, -1: not changed), priority (i32), CPU mask (AFFINITY_BYTES,
all zero: not changed).

This file is also the watchdog's program (`python watchdog.py FD TRACER_PID`): it imports
nothing but the standard library.
"""
from __future__ import annotations

import mmap
import os
import select
import struct
import subprocess
import sys

ENTRY = struct.Struct("<iii128s")
AFFINITY_BYTES = 128            # CPUs 0-1023
HEADER = struct.Struct("<Q")
TABLE_BYTES = 16 << 20          # sparse: pages are only allocated as entries reach them
CAPACITY = (TABLE_BYTES - HEADER.size) // ENTRY.size


class _Table:
    """The tracer's side: the shared table and the watchdog watching it."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        fd = os.memfd_create("slsfs-sched-watchdog", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, TABLE_BYTES)
            self.map = mmap.mmap(fd, TABLE_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(fd), str(self.owner)],
                pass_fds=(fd,), stdin=subprocess.DEVNULL, start_new_session=True,
                cwd="/")    # not the tracer's directory: it may be a mount to be unmounted while we live
        finally:
            os.close(fd)
        self.count = 0          # entries written since the table was last empty
        self.live = 0           # ... of those, not released

    def guard(self, tid: int, policy: int, priority: int, cpus: set[int] | None) -> int | None:
        if self.count >= CAPACITY:
            return None
        mask = sum(1 << cpu for cpu in cpus if cpu < AFFINITY_BYTES * 8) if cpus else 0
        slot = self.count
        ENTRY.pack_into(self.map, HEADER.size + slot * ENTRY.size, tid, policy, priority,
                        mask.to_bytes(AFFINITY_BYTES, "little"))
        self.count += 1
        self.live += 1
        HEADER.pack_into(self.map, 0, self.count)
        return slot

    def release(self, slot: int) -> None:
        ENTRY.pack_into(self.map, HEADER.size + slot * ENTRY.size, 0, -1, 0, b"")
        self.live -= 1
        if self.live == 0:
            self.count = 0
            HEADER.pack_into(self.map, 0, 0)


_table: _Table | None = None
_failed_in: int | None = None    # the process in which the watchdog could not be started


def start() -> bool:
    """Start this process's watchdog if it has none (a forked child gets its own, and a
    watchdog that was killed is replaced); False if it cannot be started (then nothing is
    guarded, and `guard` refuses)."""
    global _table, _failed_in
    if _table is not None and _table.owner == os.getpid():
        if _table.live or _table.process.poll() is None:
            return True
        _table.map.close()      # its watchdog was killed: a new one, once nothing is guarded by the old
    if _failed_in == os.getpid():
        return False
    try:
        _table = _Table()
    except OSError:
        _table, _failed_in = None, os.getpid()
        return False
    return True


def guard(tid: int, policy: int = -1, priority: int = 0, cpus: set[int] | None = None) -> int | None:
    """Note task `tid`'s own scheduling `policy` and `priority` (-1: not to be changed) and
    CPU affinity `cpus` (None: not to be changed), to be given back if this process dies
    before `release`; the entry's slot, or None if no watchdog guards it."""
    if not start():
        return None
    return _table.guard(tid, policy, priority, cpus)


def release(slot: int | None) -> None:
    """The task of `slot` has its own scheduling back (None: nothing was guarded)."""
    if slot is not None and _table is not None and _table.owner == os.getpid():
        _table.release(slot)


DYING_CHECK_S = 1.0


def _wait_for_death(tracer: int) -> None:
    """Return once process `tracer`, our parent, has exited, or its main thread has."""
    try:
        pidfd = os.pidfd_open(tracer)
    except ProcessLookupError:
        return
    if os.getppid() != tracer:      # it died before the pidfd: that pid may be another's now
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while not poller.poll(DYING_CHECK_S * 1000):
        try:
            with open(f"/proc/{tracer}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return
        except OSError:
            return


def _demote_threads_left(tracer: int) -> None:
    """Put the threads the dying `tracer` has left at a real-time policy back to
    SCHED_OTHER (see the module's docstring)."""
    if os.getppid() != tracer:      # it has exited whole (its pid may be another's now)
        return
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{tracer}/task")]
    except OSError:
        return
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK in (os.SCHED_FIFO, os.SCHED_RR):
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            continue


def _give_back(table: mmap.mmap) -> None:
    """Set the scheduling of every task left in the table back."""
    (count,) = HEADER.unpack_from(table, 0)
    for slot in range(min(count, CAPACITY)):
        tid, policy, priority, mask = ENTRY.unpack_from(table, HEADER.size + slot * ENTRY.size)
        if tid <= 0:
            continue
        try:
            if policy >= 0:
                os.sched_setscheduler(tid, policy, os.sched_param(priority))
            bits = int.from_bytes(mask, "little")
            if bits:
                os.sched_setaffinity(tid, {cpu for cpu in range(AFFINITY_BYTES * 8) if bits >> cpu & 1})
        except OSError:
            continue        # gone, or no longer ours to change


def _main(fd: int, tracer: int) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a ^C is for the tracer, which cleans up itself
    table = mmap.mmap(fd, TABLE_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
    os.close(fd)
    _wait_for_death(tracer)
    _demote_threads_left(tracer)
    _give_back(table)


if __name__ == "__main__":
    _main(int(sys.argv[1]), int(sys.argv[2]))
