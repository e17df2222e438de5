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
The worker is moved to a job's CPUs by `submit`, before it is woken: the tracer pins itself
to whichever CPU it runs on, which changes from one stop to the next, and a worker left
there by its previous job was woken behind the real-time tracer, which it cannot preempt
(a 2 GiB stop's shared scan: the worker began no piece in 4 stops of 12, at load 1, each
the first after the tracer's CPU had changed).

Simplifications: one worker for the whole process (two tracer threads' jobs queue up);
a job must not touch ptrace (its tracees belong to the tracer thread) nor anything the
tracer uses meanwhile, and should hold Python's lock as little as it can: the tracer waits
for the lock after each of its own system calls (pageread.py: the job is the reads alone).
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any, Callable

from .pinning import Pinning, raise_to_realtime

_jobs: "queue.SimpleQueue[Job]" = queue.SimpleQueue()
_worker: threading.Thread | None = None
_start_lock = threading.Lock()
_placed: set[int] = set()      # the CPUs the worker was last moved to (_place)
# While a `hurried` job is queued or runs on the worker, Python's switch interval is this
# short (5 ms by default): the worker needs Python's lock to start a job and between its
# system calls, and a thread waiting for that lock asks the holder to let it go only after a
# switch interval; the tracer lets it go for just the few microseconds of each of its own
# system calls, too short for the worker (woken on the other CPU) to take it then. With 5 ms
# the worker did not begin a 2 GiB stop's shared scan (sharedscan.py) at all in 3 stops of
# 4: the tracer scanned every piece itself (load 6-7, 2026-12-01). A copy is not hurried:
# it overlaps with the injected calls, whose waits let the lock go for longer, and a short
# interval there cost the 10 MiB bench target's stop more in lock hand-overs than it saved.
HURRIED_SWITCH_INTERVAL_S = 0.0001
_hurry_lock = threading.Lock()
_hurried = 0                    # jobs queued to the worker and not finished
_switch_interval = sys.getswitchinterval()   # the one to go back to


class Job:
    """One submitted function: `result()` waits for it to finish."""

    def __init__(self, fn: Callable[[], Any], cpus: set[int]):
        self.fn, self.cpus = fn, cpus
        self._claimed = threading.Lock()     # held by whichever thread runs it
        # held until it has run: a bare lock, not a threading.Event, whose Python-level set()
        # the worker ran holding Python's lock after its copy, while the tracer waited for it
        self._running = threading.Lock()
        self._running.acquire()
        self._value: Any = None
        self._error: BaseException | None = None
        self.hurried = False    # counted in _hurried (queued to the worker) until it has run

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
            if self.hurried:
                _unhurry()
            self._running.release()

    def result(self) -> Any:
        if self.claim():        # not begun by the worker: run it here rather than wait for it
            self.run()
        with self._running:     # (released at once: result() may be asked again)
            pass
        if self._error is not None:
            raise self._error
        return self._value


def other_cpus(pinning: Pinning) -> set[int]:
    """The CPUs the tracer may run on, less the one a freeze pinned it to (none if it is not pinned)."""
    return set(pinning.own) - {pinning.cpu} if pinning.own is not None else set()


def submit(fn: Callable[[], Any], cpus: set[int], hurried: bool = False) -> Job:
    """Run `fn` in the worker, on `cpus` (at once, here, if that is empty); `hurried`: with
    the switch interval short until it has run (HURRIED_SWITCH_INTERVAL_S)."""
    job = Job(fn, cpus)
    if not cpus:
        job.claim()
        job.run()
        return job
    start()
    _place(cpus)
    if hurried:
        _hurry()
        job.hurried = True
    _jobs.put(job)
    return job


def _place(cpus: set[int]) -> None:
    """Move the worker to `cpus` unless it is there already (from the submitter: before
    the worker is woken; from the worker: a job queued by another tracer thread)."""
    global _placed
    with _start_lock:
        if cpus == _placed or _worker is None:
            return
        try:
            os.sched_setaffinity(_worker.native_id, cpus)
        except OSError:
            return
        _placed = set(cpus)


def _hurry() -> None:
    """One more job for the worker: the switch interval short until none is left."""
    global _hurried, _switch_interval
    with _hurry_lock:
        if _hurried == 0:
            _switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(HURRIED_SWITCH_INTERVAL_S)
        _hurried += 1


def _unhurry() -> None:
    """A job of the worker's has run: the switch interval back once none is left."""
    global _hurried
    with _hurry_lock:
        _hurried -= 1
        if _hurried == 0:
            sys.setswitchinterval(_switch_interval)


def start() -> None:
    """Have the worker running. Called before a freeze (Incremental.precopy): a thread start
    waits for the new thread to be scheduled, on a busy machine milliseconds of a stop."""
    global _worker, _placed
    with _start_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, name="sls-page-copier", daemon=True)
            _worker.start()
            _placed = set()


def _work() -> None:
    try:   # lowest real-time priority, as the tracer in a stop (pinning.py); not kept by a fork
        raise_to_realtime(0)
    except OSError:
        pass
    while True:
        job = _jobs.get()
        if not job.claim():
            continue            # its submitter ran it already
        _place(job.cpus)
        job.run()
