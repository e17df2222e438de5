"""The page copier (checkpointer/copier.py): a job runs once, in the worker on another CPU
or, when the worker has not begun it by the time its result is asked for (busy, or waiting
for a CPU on a loaded machine), in the caller of result(): the stop never waits for the
worker to get a CPU."""
from __future__ import annotations

import os
import sys
import threading
import time
import weakref

import pytest

from checkpointer import copier
from checkpointer.pinning import Pinning


def _other_cpus() -> set[int]:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    return cpus - {min(cpus)}


def test_a_job_the_worker_has_not_begun_is_run_by_the_caller_of_result_and_only_once():
    cpus = _other_cpus()
    release = threading.Event()
    busy = copier.submit(lambda: release.wait(30), cpus)      # keeps the worker busy
    runs: list[int] = []
    queued = copier.submit(lambda: runs.append(threading.get_ident()) or "copied", cpus)
    try:
        assert queued.result() == "copied"
        assert runs == [threading.get_ident()], "the caller waited for the busy worker"
    finally:
        release.set()
    assert busy.result() is True
    after = copier.submit(lambda: threading.get_ident(), cpus)    # the worker skipped the job run here
    assert after.result() != 0
    assert runs == [threading.get_ident()], "the job ran twice"


def test_a_job_the_worker_began_is_waited_for_not_run_again():
    cpus = _other_cpus()
    began, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def copy() -> str:
        runs.append(threading.get_ident())
        began.set()
        release.wait(30)
        return "copied"
    job = copier.submit(copy, cpus)
    assert began.wait(30)
    threading.Timer(0.2, release.set).start()
    assert job.result() == "copied"
    assert len(runs) == 1 and runs[0] != threading.get_ident()


def test_an_error_of_the_job_is_raised_by_result_wherever_it_ran():
    cpus = _other_cpus()
    release = threading.Event()
    busy = copier.submit(lambda: release.wait(30), cpus)

    def fails() -> None:
        raise OSError(14, "Bad address")
    try:
        with pytest.raises(OSError, match="Bad address"):
            copier.submit(fails, cpus).result()
    finally:
        release.set()
    busy.result()


def test_a_job_run_lets_go_of_what_its_function_holds():
    """The worker keeps its last job until the next one comes: the function of a job run
    must not stay held with it (a stop's copy holds views of copybuffer.py's memory,
    which is used again only once nothing holds them)."""
    cpus = _other_cpus()

    class Pages:
        pass
    pages = Pages()
    gone = weakref.ref(pages)
    job = copier.submit(lambda held=pages: "copied", cpus)
    assert job.result() == "copied"
    del pages
    assert gone() is None, "the job's function (and what it holds) outlived its run"


def test_a_hurried_job_shortens_the_switch_interval_until_every_one_has_run():
    """The worker needs Python's lock to begin a job: while a hurried one (a stop's shared
    scan) waits or runs, a thread holding the lock must let it go within
    HURRIED_SWITCH_INTERVAL_S, not Python's 5 ms; the interval is given back after the
    last one, whichever thread ran it; a job not hurried leaves it alone."""
    cpus = _other_cpus()
    before = sys.getswitchinterval()
    plain = copier.submit(lambda: sys.getswitchinterval(), cpus)
    assert plain.result() == before, "a job not hurried changed the switch interval"
    began, release = threading.Event(), threading.Event()
    first = copier.submit(lambda: began.set() or release.wait(30), cpus, hurried=True)
    second = copier.submit(lambda: "run here", cpus, hurried=True)    # the worker is busy: run by result()
    try:
        assert began.wait(30)
        assert sys.getswitchinterval() == pytest.approx(copier.HURRIED_SWITCH_INTERVAL_S)
        assert second.result() == "run here"
        assert sys.getswitchinterval() == pytest.approx(copier.HURRIED_SWITCH_INTERVAL_S), "given back with a job still running"
    finally:
        release.set()
    assert first.result() is True
    assert sys.getswitchinterval() == before


def test_the_worker_begins_a_job_while_its_submitter_holds_the_cpu_the_worker_last_ran_on():
    """A stop's tracer pins itself, real-time, to whichever CPU it runs on, and that changes
    from one stop to the next: the worker, left on that CPU by its previous job, must be
    woken on the other one. Woken behind the tracer, it began nothing until the tracer
    waited (a 2 GiB stop's shared scan: the tracer scanned every piece itself in 4 stops
    of 12, each the first after its CPU had changed)."""
    _other_cpus()
    pinning = Pinning(realtime=True)
    ran: list[int] = []
    done = threading.Event()
    try:
        began = threading.Event()
        copier.submit(began.set, {pinning.cpu})
        assert began.wait(30)               # we wait: the worker ran on our CPU
        job = copier.submit(lambda: ran.append(threading.get_ident()) or done.set(),
                            copier.other_cpus(pinning), hurried=True)
        deadline = time.monotonic() + 0.5
        while not done.is_set() and time.monotonic() < deadline:
            os.stat("/")                    # lets Python's lock go, never our CPU
        job.result()
    finally:
        pinning.close()
    assert ran and ran != [threading.get_ident()], "the worker did not begin the job: the submitter ran it"


def test_the_worker_runs_no_python_function_between_its_job_and_its_next_wait():
    """Once a job's function has returned, the worker tells the job done and waits for the
    next one without running a Python function (a bare lock, not threading.Event's set()):
    every step of Python it runs then holds Python's lock while the tracer, inside the stop,
    waits for it after each of its own system calls."""
    cpus = _other_cpus()
    calls: list[str] = []

    def record(frame, event, arg) -> None:
        if event == "call":
            calls.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    def in_worker(fn) -> None:
        ran = threading.Lock()      # (a bare lock: its release is no Python function either)
        ran.acquire()
        job = copier.submit(lambda: (fn(), ran.release()), cpus)
        assert ran.acquire(timeout=30), "the worker did not run the job"
        job.result()
    in_worker(lambda: sys.setprofile(record))     # (the worker thread's own profile function)
    time.sleep(0.2)                 # the worker back in its wait for the next job
    in_worker(lambda: sys.setprofile(None))
    assert calls and not [call for call in calls if "threading" in call], calls
