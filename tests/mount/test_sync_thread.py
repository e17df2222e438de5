"""mount.sync_thread: a blocking call handed to the worker thread returns its outcome to
the trio task, quick ones without a scheduler pass, slow ones while other tasks run."""
from __future__ import annotations

import threading

import pytest
import trio

from mount.sync_thread import SyncThread

WAIT_S = 30.0


def test_a_quick_call_returns_within_the_blocking_wait():
    worker = SyncThread("test-sync")
    ran: list[str] = []

    async def main() -> None:
        await worker.run(lambda: ran.append(threading.current_thread().name), block_s=5.0)
    trio.run(main)
    assert ran == ["test-sync"]


def test_a_slow_call_lets_other_tasks_run_and_its_error_reaches_the_caller():
    worker = SyncThread("test-sync")
    release = threading.Event()
    ticks: list[int] = []

    def slow() -> None:
        if not release.wait(WAIT_S):
            raise AssertionError("never released")
        raise OSError(5, "disk said no")

    async def main() -> None:
        async def ticker() -> None:
            while len(ticks) < 3:              # the event loop runs while the call waits
                ticks.append(1)
                await trio.sleep(0.01)
            release.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            with pytest.raises(OSError, match="disk said no"):
                await worker.run(slow, block_s=0.001)
    trio.run(main)
    assert len(ticks) == 3


def test_a_cancelled_caller_still_waits_for_the_call_to_end():
    worker = SyncThread("test-sync")
    release = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        release.wait(WAIT_S)
        finished.set()

    async def main() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()                     # already cancelled: run() must not return early
            threading.Timer(0.05, release.set).start()
            await worker.run(slow)
        assert finished.is_set()
    trio.run(main)


def test_calls_run_in_the_callers_thread_while_the_disk_is_quick_and_go_back_to_the_worker_after_a_slow_one():
    worker = SyncThread("test-sync")
    threads: list[str] = []

    def call(seconds: float):
        def fn() -> None:
            threads.append(threading.current_thread().name)
            threading.Event().wait(seconds)
        return fn

    async def main() -> None:
        for seconds in (0, 0, 0.05, 0, 0):
            await worker.run(call(seconds), block_s=0.02)
    trio.run(main)
    caller = threading.current_thread().name
    # the first call measures the worker; quick ones then run inline; the slow one (inline:
    # it follows a quick one) sends the next to the worker, whose quick answer brings them back
    assert threads == ["test-sync", caller, caller, "test-sync", caller]
