"""The store's fsyncs, run in the trio thread while the disk is quick, else in a thread of their own.

An application's fsync on the mount ends in one fsync of the store's pack file (a few
hundred microseconds on this machine's disk). Waiting for it through
`trio.to_thread.run_sync` added ~0.2-0.3 ms per fsync (the thread cache's hand-off,
the wakeup socket, two scheduler passes): about as much as the disk itself, and SQLite
makes three durable fsyncs per transaction. Even a hand-off to one long-lived worker
waited for on a `threading.Event` cost two thread wakeups per fsync: ~0.15-0.2 ms on a
quiet machine, 0.8-1 ms with both CPUs busy (the worker and then the trio thread wait
for a CPU and the GIL; measured around SQLite's fsyncs, load 4-6).

`SyncThread.run(fn, block_s)` therefore calls `fn` in the caller's thread, blocking the
event loop, while the previous call took at most `block_s` (`last_s`; the first call is
handed over, to measure it); after a slower one it hands `fn` to one long-lived worker
thread and waits for it on a `threading.Event` for up to `block_s`, then through trio,
so that a slow disk holds the event loop for at most `block_s` per call. The next call
that the worker finishes within `block_s` brings the calls back inline. So the event
loop is held longer than `block_s` only by the one slow call that follows a quick one.
With `block_s=0` every call goes to the worker and is waited for through trio at once.

Why blocking is acceptable there: the mount serves FUSE with one reader task
(mount.filesystem SESSION_TASKS), which waits in the FSYNC handler anyway; only the
other tasks (periodic checkpoints, the control socket, the kernel flushes) wait more.

Simplifications: one worker per process (a daemon serves one mount), started on first
use and again in a forked child; jobs run one at a time in arrival order, but an inline
call does not wait for them (two fsyncs of one file may then run at once, which is
fine); a waiting trio task cannot be cancelled out of the wait (the fsync's outcome must
be known before its caller goes on, as with `trio.to_thread.run_sync`).
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from typing import Callable

import trio


class _Job:
    __slots__ = ("fn", "done", "error", "lock", "finished", "wake", "took_s")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.took_s = 0.0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.finished = False
        self.wake: Callable[[], None] | None = None    # set once the trio side waits through trio


def _serve(jobs: "queue.SimpleQueue[_Job]") -> None:
    while True:
        job = jobs.get()
        started = time.perf_counter()
        try:
            job.fn()
        except BaseException as exc:      # handed to the waiting task, which raises it
            job.error = exc
        job.took_s = time.perf_counter() - started
        with job.lock:
            job.finished = True
            wake = job.wake
        job.done.set()
        if wake is not None:
            wake()


class SyncThread:
    """One worker thread for blocking calls of the trio thread (see the module docstring)."""

    def __init__(self, name: str = "slsfs-fsync") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._owner = 0                   # the pid that started the worker (a fork has none)
        self.last_s = math.inf            # how long the last call's fn took (the first goes to the worker)

    def _start(self) -> None:
        if self._owner != os.getpid():
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(self._jobs,), name=self.name, daemon=True).start()
            self._owner = os.getpid()

    async def run(self, fn: Callable[[], object], block_s: float = 0.0) -> None:
        """Run `fn()`, in the caller's thread while the last call took at most `block_s`,
        else in the worker; return when it has returned, or raise what it raised."""
        if block_s > 0 and self.last_s <= block_s:
            started = time.perf_counter()
            try:
                fn()
            finally:
                self.last_s = time.perf_counter() - started
            return
        self._start()
        job = _Job(fn)
        self._jobs.put(job)
        if not (block_s > 0 and job.done.wait(block_s)):
            token = trio.lowlevel.current_trio_token()
            finished = trio.Event()

            def wake() -> None:
                try:
                    token.run_sync_soon(finished.set)
                except trio.RunFinishedError:
                    pass
            with job.lock:
                if not job.finished:
                    job.wake = wake
            if job.wake is not None:
                with trio.CancelScope(shield=True):
                    await finished.wait()
        self.last_s = job.took_s
        if job.error is not None:
            raise job.error


#: the process's worker for the store's fsyncs
SYNC_THREAD = SyncThread()
