"""Where the seal of a group stop runs (slsfs.group_checkpoint.Seal.start).

A group that writes no file (Redis without persistence) needs neither a syncfs nor a new
files commit: its seal is answered in the tracer thread at once, with no trip to the trio
thread (the stop waited for it to get a CPU and Python's lock: up to 12 ms at load 6). A
seal with work to do runs in a task of the trio thread, which answers the write-back
requests its syncfs waits for (no thread of its own to wake, and no hand-off from it to
trio for the commit: ~0.9 of ~1.95 ms of a SQLite stop), and asks whether a syncfs is
needed only once (the question resets the mount's mark of writes it may hold).
"""
from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
import trio

from checkpointer import CheckpointError
from group_helpers import wait_for
from slsfs import group_checkpoint
from slsfs.group_checkpoint import Seal, Sealing


def _never() -> None:
    raise AssertionError("the trio thread was asked for a files commit")


async def _no_sync(request: Any) -> None:
    """A mount whose kernel cache holds nothing: its sync has nothing to wait for."""


@dataclass
class Files:
    """A mount's file system as a seal sees it (group_checkpoint.SealedFiles), made of the
    steps a test gives: by default a syncfs is needed, nothing was committed before, no
    syncfs can be asked at the freeze, and no files commit may be made."""

    commit: Callable[[], Any] = _never
    syncing: Callable[[Any], Awaitable[None]] = _no_sync
    needed: Callable[[], bool] = lambda: True
    unchanged: Callable[[], Any] = lambda: None
    request: Callable[[], Any] = lambda: None
    done_now: Callable[[Any], bool] = lambda request: False

    def syncfs_needed(self) -> bool:
        return self.needed()

    def files_unchanged(self):
        return self.unchanged()

    def request_sync(self):
        return self.request()

    def synced_now(self, request) -> bool:
        return self.done_now(request)

    async def sync(self, request) -> None:
        await self.syncing(request)

    def commit_files(self):
        return self.commit()


class TrioThread:
    """A trio loop in a thread of its own, as the daemon's: its token, a nursery and its
    Python ident."""

    def __init__(self, token: trio.lowlevel.TrioToken, nursery: trio.Nursery, ident: int) -> None:
        self.token, self.nursery, self.ident = token, nursery, ident


@contextmanager
def trio_thread() -> Iterator[TrioThread]:
    started: queue.Queue = queue.Queue()
    done = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            started.put(TrioThread(trio.lowlevel.current_trio_token(), nursery, threading.get_ident()))
            await trio.to_thread.run_sync(done.wait)

    thread = threading.Thread(target=trio.run, args=(main,))
    thread.start()
    try:
        yield started.get(timeout=30)
    finally:
        done.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the trio loop did not end (a seal task still runs?)"


def test_a_seal_with_nothing_to_write_back_or_commit_is_answered_in_the_calling_thread():
    asked: list[tuple[str, int]] = []

    def syncfs_needed() -> bool:
        asked.append(("syncfs_needed", threading.get_ident()))
        return False

    def files_unchanged():
        asked.append(("files_unchanged", threading.get_ident()))
        return 7, b"root"

    sealing = Seal(Files(needed=syncfs_needed, unchanged=files_unchanged)).start()
    assert sealing.drained.done() and sealing.committed.done(), "the seal was handed to another thread"
    committed, _ = sealing.committed.result()
    times = sealing.drained.result()
    assert committed == (7, b"root")
    assert times["syncfs"] == 0.0
    me = threading.get_ident()
    assert asked == [("syncfs_needed", me), ("files_unchanged", me)]


def test_a_seal_that_must_commit_runs_in_the_trio_thread_and_asks_about_the_syncfs_once():
    asked: list[str] = []
    committed_in: list[int] = []

    def syncfs_needed() -> bool:
        asked.append("syncfs_needed")
        return False

    def commit_files():
        committed_in.append(threading.get_ident())
        return 8, b"new root"

    with trio_thread() as loop:
        seal = Seal(Files(commit_files, needed=syncfs_needed), loop.token, loop.nursery)
        committed, _ = seal.start().committed.result(timeout=30)
    assert committed == (8, b"new root")
    assert asked == ["syncfs_needed"], "the syncfs question (which resets the mount's mark) was asked twice"
    assert committed_in == [loop.ident], "the files were not committed in the trio thread"


def test_a_seal_that_must_write_back_syncs_in_the_trio_thread_before_it_commits():
    steps: list[tuple[str, int]] = []

    async def sync(requested: int | None) -> None:
        steps.append(("syncfs", threading.get_ident()))
        await trio.sleep(0.01)             # the trio thread answers the write-back meanwhile

    with trio_thread() as loop:
        seal = Seal(Files(lambda: steps.append(("commit", threading.get_ident())) or (9, b"synced root"), sync),
                    loop.token, loop.nursery)
        sealing = seal.start()
        committed, _ = sealing.committed.result(timeout=30)
        times = sealing.drained.result()
    assert committed == (9, b"synced root")
    assert steps == [("syncfs", loop.ident), ("commit", loop.ident)]
    assert times["syncfs"] >= 10


def test_a_seal_whose_capture_is_done_commits_the_files_once_the_tracer_has_thawed():
    """The tracer thaws once the kernel's writes are in (`drained`); the trio thread, which
    answers no request in between, commits after the thaw when the capture is done, so the
    thaw does not wait for the commit's Python."""
    steps: list[str] = []
    with trio_thread() as loop:
        seal = Seal(Files(lambda: steps.append("commit") or (11, b"root")), loop.token, loop.nursery)
        sealing = Sealing()
        sealing.capture_done()
        seal.start(sealing)
        sealing.drained.result(timeout=30)
        steps.append("thaw")
        sealing.thawed()
        committed, times = sealing.committed.result(timeout=30)
    assert committed == (11, b"root")
    assert steps == ["thaw", "commit"], "the files were committed before the thaw"
    assert list(times) == ["after_thaw_files_commit"]


def test_a_seal_whose_capture_still_runs_commits_without_waiting_for_the_thaw(monkeypatch):
    """The tracer may still need the mount (files it reads) until its capture is done: the
    trio thread must not wait for a thaw then."""
    monkeypatch.setattr(group_checkpoint, "THAW_WAIT_S", 600.0)
    with trio_thread() as loop:
        seal = Seal(Files(lambda: (12, b"root")), loop.token, loop.nursery)
        sealing = seal.start()
        committed, times = sealing.committed.result(timeout=30)
        sealing.thawed()
    assert committed == (12, b"root")
    assert list(times) == ["files_commit"]


def test_a_seal_whose_syncfs_asked_at_the_freeze_is_done_commits_without_waiting_for_it():
    """The tracer asks for the syncfs at the freeze (`request_sync`); when the trio thread
    gets its turn and finds it answered with nothing left to drain (`synced_now`), it
    commits at once: the seal's own sync is not run."""
    asked: list[str] = []

    async def sync(requested: int | None) -> None:
        raise AssertionError("the seal waited for a syncfs that was done")

    with trio_thread() as loop:
        seal = Seal(Files(lambda: (13, b"root"), sync, request=lambda: asked.append("request") or 7,
                          done_now=lambda number: asked.append(f"done {number}") or True), loop.token, loop.nursery)
        committed, _ = seal.start().committed.result(timeout=30)
    assert committed == (13, b"root")
    assert asked == ["request", "done 7"]


def test_a_seal_whose_syncfs_asked_at_the_freeze_is_not_done_waits_for_that_one():
    waited: list[int | None] = []

    async def sync(requested: int | None) -> None:
        waited.append(requested)

    with trio_thread() as loop:
        seal = Seal(Files(lambda: (14, b"root"), sync, request=lambda: 8), loop.token, loop.nursery)
        committed, _ = seal.start().committed.result(timeout=30)
    assert committed == (14, b"root")
    assert waited == [8], "the seal asked for another syncfs instead of waiting for the one asked at the freeze"


def test_a_seal_whose_sync_fails_hands_its_error_to_the_stop_and_leaves_the_loop_running():
    async def sync(requested: int | None) -> None:
        raise OSError(5, "syncfs of the mount: Input/output error")

    with trio_thread() as loop:
        failing = Seal(Files(syncing=sync), loop.token, loop.nursery)
        with pytest.raises(OSError, match="Input/output error"):
            failing.start().drained.result(timeout=30)
        after = Seal(Files(lambda: (10, b"root")), loop.token, loop.nursery)
        assert after.start().committed.result(timeout=30)[0] == (10, b"root"), "the trio loop ended with the failure"


def test_a_seal_started_once_the_daemon_stopped_serving_is_a_checkpoint_error():
    with trio_thread() as loop:
        pass
    with pytest.raises(CheckpointError, match="stopped serving"):
        Seal(Files(), loop.token, loop.nursery).start().drained.result(timeout=30)


TRACEFS = Path("/sys/kernel/tracing")
SET_AFFINITY = "events/syscalls/sys_enter_sched_setaffinity"


@contextmanager
def affinity_changes_of(tid: int) -> Iterator[list[int]]:
    """The sched_setaffinity calls made on task `tid` (by any process) while the block runs,
    from the kernel's own record (a tracefs instance of our own): the list is filled (one
    entry per call) when the block ends."""
    if not (TRACEFS / SET_AFFINITY).is_dir():
        pytest.skip("no syscall trace events (tracefs) on this kernel")
    instance = TRACEFS / "instances" / f"slsfs-test-affinity-{os.getpid()}"
    instance.mkdir()
    calls: list[int] = []
    try:
        (instance / SET_AFFINITY / "filter").write_text(f"pid == {tid}")
        (instance / SET_AFFINITY / "enable").write_text("1")
        yield calls
        (instance / SET_AFFINITY / "enable").write_text("0")
        calls.extend(tid for line in (instance / "trace").read_text().splitlines()
                     if "sys_sched_setaffinity" in line)
    finally:
        instance.rmdir()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: no other CPU to be moved to")
def test_a_group_stop_leaves_the_trio_threads_cpus_as_they_are(group_store):
    """Inside a stop the tracer is pinned to one CPU (checkpointer.pinning). Moving the trio
    thread off that CPU for the seal, and back after it, started the seal ~1 ms sooner but
    cost the application far more: the trio thread, moved twice a checkpoint, then waited
    about twice as long for a CPU at each wake-up, all through the time between checkpoints
    (the weight of the daemon's autogroup split between the two CPUs), and SQLite at 10 Hz
    made a fifth to a third fewer rows (traced at load 9-10). The seal runs where the
    scheduler puts the trio thread (the daemon's main thread)."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "20", "--",
              "sh", "-c", "while :; do date +%s%N > tick; sleep 0.01; done")
    wait_for(lambda: (store.mnt / "tick").exists(), "the group to run")
    status = store.ps()
    with affinity_changes_of(status["daemon"]) as calls:
        taken = status["groups"][0]["checkpoints"]
        wait_for(lambda: store.ps()["groups"][0]["checkpoints"] >= taken + 10, "ten more checkpoints")
    assert calls == [], f"{len(calls)} changes of the trio thread's CPUs in ten group stops"
    store.sls("stop", "--store", str(store.path))
