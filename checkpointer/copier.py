"""Page copies of a stop made on the other CPU, while the tracer captures the rest.

What: `submit(fn, cpus)` runs `fn()` in one long-lived worker thread on `cpus` (those the
tracer may use, less the one it and the frozen tasks are pinned to: `other_cpus`), at the
lowest real-time priority (idle, the worker sleeps on a queue); the returned `Job`'s
`result()` waits for it and gives what `fn` returned, or raises what it raised; a job the
worker has not begun by then is run by the caller of `result()` itself (the worker skips it).
With no other CPU `submit` runs `fn` at once (the `Job` is then already done).
Why: copying the pages written again after the pre-copy is 0.6-1.4 ms of a 1 MiB stop
(pages last written by the target on the other core: a read of each cache line costs a
transfer between cores, measured 1.0-1.4 ms for the first read of 1 MiB, 0.2-0.3 ms for a
second one); process_vm_readv lets go of Python's lock, so the worker's copy overlaps
with the tracer's reading of the process's files, signals and threads. Real-time, the
worker does not wait behind whatever else runs on that CPU (the machine is shared); when it
still has not begun (other real-time tasks there, at load 15 the wait for the copy of a
1 MiB stop was 1-1.8 ms), the tracer copies the pages itself rather than wait for it.

Simplifications: one worker for the whole process (two tracer threads' jobs queue up);
a job must not touch ptrace (its tracees belong to the tracer thread) nor anything the
tracer uses meanwhile, and should hold Python's lock as little as it can: the tracer waits
for the lock after each of its own system calls (pageread.py: the job is the reads alone).
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable

from .pinning import Pinning

_jobs: "queue.SimpleQueue[Job]" = queue.SimpleQueue()
_worker: threading.Thread | None = None
_start_lock = threading.Lock()


class Job:
    """One submitted function: `result()` waits for it to finish."""

    def __init__(self, fn: Callable[[], Any], cpus: set[int]):
        self.fn, self.cpus = fn, cpus
        self._claimed = threading.Lock()     # held by whichever thread runs it
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def claim(self) -> bool:
        """True for the one thread that is to run the job (the worker, or result()'s caller)."""
        return self._claimed.acquire(blocking=False)

    def run(self) -> None:
        fn, self.fn = self.fn, None     # not held once run: the worker keeps its last job (and a
        try:                            # copy's closure holds the views of copybuffer.py's arena)
            self._value = fn()
        except BaseException as exc:      # handed to the submitter by result()
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> Any:
        if self.claim():        # not begun by the worker: run it here rather than wait for it
            self.run()
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


def other_cpus(pinning: Pinning) -> set[int]:
    """The CPUs the tracer may run on, less the one a freeze pinned it to (none if it is not pinned)."""
    return set(pinning.own) - {pinning.cpu} if pinning.own is not None else set()


def submit(fn: Callable[[], Any], cpus: set[int]) -> Job:
    """Run `fn` in the worker, on `cpus` (at once, here, if that is empty)."""
    job = Job(fn, cpus)
    if not cpus:
        job.claim()
        job.run()
        return job
    start()
    _jobs.put(job)
    return job


def start() -> None:
    """Have the worker running. Called before a freeze (Incremental.precopy): a thread start
    waits for the new thread to be scheduled, on a busy machine milliseconds of a stop."""
    global _worker
    with _start_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, name="sls-page-copier", daemon=True)
            _worker.start()


def _work() -> None:
    try:   # lowest real-time priority, as the tracer in a stop (pinning.py); not kept by a fork
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except OSError:
        pass
    cpus: set[int] = set()
    while True:
        job = _jobs.get()
        if not job.claim():
            continue            # its submitter ran it already
        if job.cpus != cpus:
            try:
                os.sched_setaffinity(0, job.cpus)
                cpus = job.cpus
            except OSError:
                pass
        job.run()
