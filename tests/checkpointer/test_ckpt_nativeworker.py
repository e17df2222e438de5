"""The native worker (checkpointer/nativeworker.py): a thread of machine code that makes the
stop's page reads on the other CPU without Python's lock. Each call runs once, on the
worker or, when the worker has not begun it, in the caller of results(); failures come
back as -errno; one batch at a time; a forked child gets a worker of its own."""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import pytest

from checkpointer import nativeworker
from ckpt_helpers import wait_for

NR_READ, NR_GETTID, NR_CLOSE = 0, 186, 3


def _other_cpus() -> set[int]:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    return cpus - {min(cpus)}


def _in_read(tid: int) -> bool:
    """Is thread `tid` of this process blocked in read()?"""
    with open(f"/proc/self/task/{tid}/syscall") as f:
        return f.read().split()[0] == str(NR_READ)


def test_calls_the_worker_has_not_begun_are_made_by_the_caller_and_the_one_it_makes_is_waited_for():
    cpus = _other_cpus()
    worker = nativeworker.start()
    read_end, write_end = os.pipe()
    buffer = ctypes.create_string_buffer(8)
    try:
        batch = nativeworker.submit([(NR_READ, (read_end, ctypes.addressof(buffer), 8)), (NR_GETTID, ())], cpus,
                                    keep=buffer)
        wait_for(lambda: _in_read(worker.control.tid), "the worker to block in the first call")
        threading.Timer(0.2, os.write, (write_end, b"x")).start()
        assert batch.results() == [1, threading.get_native_id()]     # the second made here, once
        assert buffer.raw[:1] == b"x"
    finally:
        os.close(read_end)
        os.close(write_end)
    after = nativeworker.submit([(NR_GETTID, ())], cpus)
    time.sleep(0.05)                                # the worker takes it meanwhile
    assert after.results() == [worker.control.tid]


def test_a_failed_call_gives_minus_errno_and_the_others_still_run():
    batch = nativeworker.submit([(NR_CLOSE, (-1,)), (NR_GETTID, ())], _other_cpus())
    first, second = batch.results()
    assert first == -9 and second > 0          # EBADF


def test_one_batch_at_a_time_and_none_without_another_cpu_or_over_capacity():
    cpus = _other_cpus()
    assert nativeworker.submit([(NR_GETTID, ())], set()) is None
    assert nativeworker.submit([(NR_GETTID, ())] * (nativeworker.CAPACITY + 1), cpus) is None
    batch = nativeworker.submit([(NR_GETTID, ())], cpus)
    assert nativeworker.submit([(NR_GETTID, ())], cpus) is None      # the first one's results not taken yet
    batch.results()
    assert nativeworker.submit([(NR_GETTID, ())], cpus).results()[0] > 0


def test_the_worker_blocks_every_signal():
    worker = nativeworker.start()
    with open(f"/proc/self/task/{worker.control.tid}/status") as f:
        blocked = int(next(line.split()[1] for line in f if line.startswith("SigBlk:")), 16)
    for signo in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1):
        assert blocked >> (signo - 1) & 1, signo


def test_a_forked_child_gets_a_worker_of_its_own():
    cpus = _other_cpus()
    parent = nativeworker.start().control.tid
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:                     # (no pytest in here: only os calls, then _exit)
        try:
            batch = nativeworker.submit([(NR_GETTID, ())], cpus)
            time.sleep(0.05)
            tid = batch.results()[0]
            os.write(write_end, str(tid).encode() + b" " + " ".join(os.listdir("/proc/self/task")).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 4096).decode().split()
    os.close(read_end)
    os.waitpid(child, 0)
    tid, tasks = answer[0], answer[1:]
    assert tid in tasks and tid != str(child) and int(tid) != parent, answer
