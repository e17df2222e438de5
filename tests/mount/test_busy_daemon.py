"""A daemon kept busy by a stream of requests still does its other work.

The single reader task answers requests that follow each other closely without a
trio scheduler pass (mount.single_reader); these tests hold it to still giving the
other tasks their turn: periodic checkpoints, the control socket, an fsync's commit
in a worker thread, and a stop by signal (the cancellation of the serving task).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from mount_helpers import is_mounted, pid_alive, sls, wait_for

# getxattr of a name a file does not have: the kernel caches no answer, so every call
# is a request to the daemon
HAMMER = textwrap.dedent("""
    import os, sys, time
    target, ready = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 300
    n = 0
    while time.monotonic() < deadline:
        try:
            os.getxattr(target, "user.absent")
        except OSError as exc:
            if exc.errno != 61:          # ENODATA: the expected answer; anything else: unmounted
                break
        n += 1
        if n == 200:
            open(ready, "w").close()
""")


def test_checkpoints_control_and_fsync_go_on_under_a_request_stream(mnt, workdir):
    target = mnt.path / "target"
    target.write_bytes(b"x")
    ready = workdir / "hammer-ready"
    hammers = [subprocess.Popen([sys.executable, "-c", HAMMER, str(target), str(ready)])
               for _ in range(2)]
    try:
        wait_for(ready.exists, "the request stream to start")
        before = mnt.status()["checkpoints_taken"]
        (mnt.path / "changed").write_bytes(b"a change to checkpoint")
        wait_for(lambda: mnt.status()["checkpoints_taken"] > before,
                 "a periodic checkpoint while requests keep coming")
        named = sls("checkpoint", mnt.path, "--name", "busy")     # the control socket answers
        assert named.returncode == 0
        with open(mnt.path / "synced", "wb") as f:
            f.write(b"durable")
            os.fsync(f.fileno())                 # the commit's fsync runs in a worker thread
        assert all(h.poll() is None for h in hammers), "the request stream stopped early"
        os.kill(mnt.pid, signal.SIGTERM)         # stops serving at its next scheduler pass
        wait_for(lambda: not pid_alive(mnt.pid), "the daemon to stop while requests keep coming")
        assert not is_mounted(mnt.path)
        for h in hammers:
            h.wait(timeout=60)
    finally:
        for h in hammers:
            if h.poll() is None:
                h.kill()
                h.wait()
    mnt.mount()
    assert (mnt.path / "synced").read_bytes() == b"durable"
    assert (mnt.path / "changed").read_bytes() == b"a change to checkpoint"


def test_a_wait_that_never_blocks_still_lets_other_tasks_run():
    """Deterministic form of the above: a file descriptor that is always readable (a
    client that never pauses) must not keep trio's other tasks, nor a cancellation, out."""
    import trio

    from mount.single_reader import _RequestWait

    async def main() -> tuple[bool, int]:
        r, w = os.pipe()
        os.write(w, b"always readable")
        wait = _RequestWait()
        other_ran = trio.Event()
        waits = 0

        async def other_task() -> None:
            other_ran.set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other_task)
                with trio.move_on_after(0.05):           # a cancellation must get in too
                    while waits < 2_000_000:
                        await wait.wait_readable(r)
                        waits += 1
        finally:
            os.close(r)
            os.close(w)
        return other_ran.is_set(), waits

    other_ran, waits = trio.run(main)
    assert other_ran
    assert waits < 2_000_000, "the cancellation never reached the waiting task"


def test_the_single_reader_gives_a_due_turn_its_pass_before_the_next_request(monkeypatch):
    """A checkpoint announced as due (single_reader.announce_turn) runs before the next
    request is taken, not up to SCHEDULER_EVERY_S + POLL_MS later: the wait that follows
    a request goes through trio's scheduler then (here seen as the cancellation it lets
    in), and otherwise, inside the window, it does not."""
    import trio

    from mount import single_reader

    monkeypatch.setattr(single_reader, "SCHEDULER_EVERY_S", 3600.0)   # the window never closes
    monkeypatch.setattr(single_reader, "_next_turn", float("inf"))

    async def passes(wait, fd: int) -> bool:
        with trio.CancelScope() as scope:
            scope.cancel()
            await wait.wait_readable(fd)
        return scope.cancelled_caught

    async def main() -> tuple[bool, bool, bool]:
        r, w = os.pipe()
        os.write(w, b"always readable")
        try:
            wait = single_reader._RequestWait()
            await wait.wait_readable(r)                  # the first wait: a pass
            without_turn = await passes(wait, r)
            single_reader.announce_turn(trio.current_time() - 0.001)
            due = await passes(wait, r)
            after = await passes(wait, r)                # the turn was given: fast again
        finally:
            os.close(r)
            os.close(w)
        return without_turn, due, after

    assert trio.run(main) == (False, True, False)
