"""Write restored pages into a process from a second thread.

What: `PageWriter(tid)` takes runs (an address and the consecutive pages there) with
`write()` and writes each through /proc/TID/mem with one pwritev, from its own thread; `close()` waits until every run is in and
raises the first error. Why: restore time is reading pages from the store (Python, holds
the GIL) plus writing them into the new process (the kernel faults in and fills each
page; os.pwrite lets go of the GIL): with a second thread the two overlap. The thread
leaves the CPU the restorer pinned itself to (it inherited that pinning), so the two
run side by side on two CPUs.

Simplifications: at most QUEUED_RUNS runs (of up to 1 MiB: image.RUN_PAGES) wait in memory; the thread
touches no ptrace state (only the mem file), so ptrace's one-thread rule still holds.
"""
from __future__ import annotations

import os
import queue
import threading

from .errors import CheckpointError, ProcessGone

QUEUED_RUNS = 32


class PageWriter:
    def __init__(self, tid: int):
        self.tid = tid
        try:
            self._mem = os.open(f"/proc/{tid}/mem", os.O_RDWR)
        except FileNotFoundError as exc:
            raise ProcessGone(tid) from exc
        self._queue: queue.Queue[tuple[int, list[bytes]] | None] = queue.Queue(QUEUED_RUNS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sls-pages-{tid}", daemon=True)
        self._thread.start()

    def write(self, addr: int, pages: list[bytes]) -> None:
        """Queue a run: whole pages from addr on (blocks while QUEUED_RUNS wait)."""
        if self._error is not None:
            self.close()
        self._queue.put((addr, pages))

    def _run(self) -> None:
        try:  # not on the CPU the restorer pinned itself to (pinning.py): on any, beside it
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        except OSError:
            pass  # a cpuset that allows none of them: stay where we are
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain after a failure; close() reports it
            addr, pages = item
            try:
                self._write_run(addr, pages)
            except OSError as exc:
                self._error = CheckpointError(f"cannot write memory at {addr:#x} into task {self.tid}: "
                                              f"{exc.strerror}")
            except CheckpointError as exc:
                self._error = exc

    def _write_run(self, addr: int, pages: list[bytes]) -> None:
        buffers = list(pages)
        while buffers:
            done = os.pwritev(self._mem, buffers, addr)
            if done == 0:  # the task's memory is gone: it is exiting (killed)
                raise ProcessGone(self.tid, "its memory went away while being written")
            addr += done
            while buffers and done >= len(buffers[0]):
                done -= len(buffers[0])
                buffers.pop(0)
            if done:
                buffers[0] = memoryview(buffers[0])[done:]

    def close(self) -> None:
        """Wait for every queued run; raise the first error (once)."""
        if self._mem >= 0:
            self._queue.put(None)
            self._thread.join()
            os.close(self._mem)
            self._mem = -1
        error, self._error = self._error, None
        if error is not None:
            raise error
