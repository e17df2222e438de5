"""Where the seal of a group stop runs (slsfs.group_checkpoint.Seal.start).

A group that writes no file (Redis without persistence) needs neither a syncfs nor a new
files commit: its seal is answered in the tracer thread at once, not handed to the seal
thread (the stop waited for that thread to get a CPU and Python's lock: up to 12 ms at
load 6). A seal with work to do still goes to the seal thread, and asks whether a syncfs
is needed only once (the question resets the mount's mark of writes it may hold). The seal
thread runs on every CPU, though the tracer that starts it is pinned to one.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from slsfs.group_checkpoint import Seal


def _never() -> None:
    raise AssertionError("the trio thread was asked for a files commit")


def test_a_seal_with_nothing_to_write_back_or_commit_is_answered_in_the_calling_thread():
    asked: list[tuple[str, int]] = []

    def syncfs_needed() -> bool:
        asked.append(("syncfs_needed", threading.get_ident()))
        return False

    def files_unchanged():
        asked.append(("files_unchanged", threading.get_ident()))
        return 7, b"root"

    future = Seal(-1, _never, _never, syncfs_needed=syncfs_needed, files_unchanged=files_unchanged).start()
    assert future.done(), "the seal was handed to another thread"
    committed, times = future.result()
    assert committed == (7, b"root")
    assert times["syncfs"] == 0.0
    me = threading.get_ident()
    assert asked == [("syncfs_needed", me), ("files_unchanged", me)]


def test_a_seal_that_must_commit_runs_in_the_seal_thread_and_asks_about_the_syncfs_once():
    asked: list[str] = []
    threads: list[int] = []

    def syncfs_needed() -> bool:
        asked.append("syncfs_needed")
        return False

    def in_trio(fn):
        threads.append(threading.get_ident())
        return fn()

    seal = Seal(-1, in_trio, lambda: (8, b"new root"), syncfs_needed=syncfs_needed, files_unchanged=lambda: None)
    committed, _ = seal.start().result(timeout=30)
    assert committed == (8, b"new root")
    assert asked == ["syncfs_needed"], "the syncfs question (which resets the mount's mark) was asked twice"
    assert threads and threads[0] != threading.get_ident()


def test_a_seal_that_must_write_back_syncs_before_it_commits():
    steps: list[str] = []
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)     # not a FUSE mount: nothing to wait for after the sync
    try:
        seal = Seal(fd, lambda fn: fn(), lambda: steps.append("commit") or (9, b"synced root"),
                    sync_through=lambda: steps.append("syncfs"), syncfs_needed=lambda: True,
                    files_unchanged=lambda: None)
        committed, _ = seal.start().result(timeout=30)
    finally:
        os.close(fd)
    assert committed == (9, b"synced root")
    assert steps == ["syncfs", "commit"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to be pinned away from")
def test_the_seal_thread_runs_on_every_cpu_though_started_from_a_pinned_tracer():
    """The tracer thread starts the seal thread inside its first stop, pinned to one CPU
    (checkpointer.pinning); a thread inherits its creator's affinity, and the seal thread
    then shared the tracer's CPU (run SCHED_FIFO during every stop) for the daemon's life.
    A fresh interpreter: the seal thread is started once per process."""
    script = textwrap.dedent("""
        import os
        from concurrent.futures import ThreadPoolExecutor
        from slsfs.group_checkpoint import Seal
        everywhere = os.sched_getaffinity(0)

        def as_the_tracer():
            os.sched_setaffinity(0, {min(everywhere)})      # pinned, as inside a stop
            seal = Seal(-1, lambda fn: fn(), lambda: (os.sched_getaffinity(0), b"root"),
                        syncfs_needed=lambda: False, files_unchanged=lambda: None)
            return seal.start().result(timeout=30)

        (cpus, _), _ = ThreadPoolExecutor(1).submit(as_the_tracer).result()
        print(sorted(cpus) == sorted(everywhere), sorted(cpus), sorted(everywhere))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True"), f"the seal thread's CPUs, then the process's: {out.stdout}"
