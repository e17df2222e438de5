"""The tasks of a restored tree, and their release by their tracer once killed.

What: `tasks_below(pid)` lists every task below `pid` (processes and their threads, from
each thread's children); `release(tids)` waits, as their tracer, for those of `tids`
this process traces, once they were killed (polled, WNOHANG: a traced task not yet gone
holds nothing up).
Why: every task a restore makes is traced by the restorer until the processes are let
go, and a traced task that exits stays a zombie until its tracer waits for it, whoever
its parent is. A restore that failed killed its tasks and waited for none: each stayed a
zombie for as long as the restoring process (a test session, a daemon) lived, re-parented
to PID 1 once its stub parent had died (PID 1 cannot reap it), and PID 1 of the new PID
namespace stayed with them (its exit waits until every task of its namespace is released).
"""
from __future__ import annotations

import os
import time

from . import kernel

RELEASE_S = 10.0


def tasks_below(pid: int) -> list[int]:
    """The tasks below process `pid`, parents before children: each process, then its
    other threads."""
    found: list[int] = []
    queue = [pid]
    while queue:
        process = queue.pop(0)
        try:
            threads = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        found += [int(t) for t in threads if int(t) != process]
        for thread in threads:
            try:
                with open(f"/proc/{process}/task/{thread}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def traced_here(tid: int) -> bool:
    """Whether this process traces task `tid`."""
    try:
        with open(f"/proc/{tid}/status") as f:
            return next(line for line in f if line.startswith("TracerPid:")).split()[1] == str(os.getpid())
    except (OSError, StopIteration):
        return False


def release(tids: list[int], timeout: float = RELEASE_S) -> None:
    """Wait, as their tracer, for the killed tasks `tids` to be gone (those not traced
    here are passed over): a thread-group leader only once its threads are, PID 1 of a
    namespace once every task of it is, so they are polled until all are or `timeout`
    seconds have passed."""
    pending = [tid for tid in tids if traced_here(tid)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for tid in list(pending):
            try:
                waited, status = kernel.waitpid(tid, kernel.WALL | os.WNOHANG)
                done = waited == tid and not os.WIFSTOPPED(status)    # (a stop it had reported before)
            except ChildProcessError:      # released already
                done = True
            if done:
                pending.remove(tid)
        if pending:
            time.sleep(0.001)
