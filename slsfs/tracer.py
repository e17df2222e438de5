"""The one thread that makes every ptrace call of the daemon.

Why a thread of its own: ptrace requires every call for a tracee to come from the
thread that attached it, and the trio thread must keep serving FUSE while processes
are being frozen (a task blocked in a FUSE request only stops once the daemon has
answered it; the syncfs of a checkpoint also needs the daemon to answer). So the
checkpointer runs here, and the trio thread keeps all store access (the Store is not
thread-safe): functions running here call back into trio with `in_trio`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import trio


class Tracer:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slsfs-tracer")
        self._token: trio.lowlevel.TrioToken | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) in the tracer thread; await its result without blocking trio."""
        self._token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = self._pool.submit(fn, *args)
        future.add_done_callback(lambda _: self._token.run_sync_soon(done.set))
        with trio.CancelScope(shield=True):       # a half-done freeze must finish (and thaw)
            await done.wait()
        return future.result()

    def in_trio(self, fn: Callable[..., Any], *args: Any) -> Any:
        """From the tracer thread: run fn(*args) in the trio thread and return its result."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def close(self) -> None:
        """No waiting: after the FUSE loop stopped, a job stuck on the mount never ends."""
        self._pool.shutdown(wait=False, cancel_futures=True)
