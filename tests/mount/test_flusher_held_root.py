"""mount.flusher.Flusher: the syncfs helper asked from the trio thread, through a descriptor
of the mount's root that the daemon holds (a group daemon syncs its mount that way while
the group is frozen) or through one it opens for each request.

With the writeback cache, a write stays in the kernel until something syncs the mount:
the daemon sees it (its file system turns dirty) only after Flusher.syncfs().
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio

from mount.flusher import Flusher
from mount_helpers import sls, wait_for

# opens the file, says so, writes one line of stdin into it when told, says so, then
# keeps the file open (no close, no fsync) until killed
WRITER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
print("opened", flush=True)
os.write(fd, sys.stdin.readline().encode())
print("written", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("held", [False, True], ids=["opened_each_time", "held_descriptor"])
def test_a_write_held_in_the_kernel_reaches_the_daemon_at_syncfs(new_mount, held):
    mnt = new_mount("--checkpoint-interval", "0")      # no periodic flushes
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt.path / "held")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    root = os.open(mnt.path, os.O_RDONLY | os.O_DIRECTORY) if held else None

    async def syncs() -> Flusher:
        flusher = await Flusher.start(str(mnt.path), root)
        try:
            assert writer.stdout.readline() == "opened\n"
            sls("checkpoint", mnt.path)                # the create is committed: clean
            assert not mnt.status()["dirty"]
            writer.stdin.write("held in the page cache\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "written\n"
            # the kernel writes back on its own only after ~30 s (dirty_expire_centisecs)
            assert not mnt.status()["dirty"], "the write reached the daemon without a sync"
            await flusher.syncfs()
            wait_for(lambda: mnt.status()["dirty"], "the daemon to have the write", 30)
            await flusher.syncfs()                     # one helper, many syncs
        finally:
            await flusher.close()
        return flusher

    try:
        flusher = trio.run(syncs)
    finally:
        if root is not None:
            os.close(root)
        writer.kill()
        writer.wait(timeout=60)
    assert flusher.process.returncode is not None


def test_a_syncfs_asked_for_from_another_thread_is_answered_to_its_own_requester(new_mount):
    """A group stop's tracer asks for the syncfs at the freeze (Flusher.request, from its
    own thread) and the trio thread takes the answer later (answered/take, or answer). The
    answers are numbered as the requests were written: a syncfs asked for after a write
    returns only once its own syncfs, begun after the write, has run, not with the answer
    to an earlier request still waiting to be taken (that syncfs began before the write)."""
    mnt = new_mount("--checkpoint-interval", "0")      # no periodic flushes
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt.path / "held")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def syncs() -> None:
        flusher = await Flusher.start(str(mnt.path))
        try:
            await flusher.ready()
            assert writer.stdout.readline() == "opened\n"
            sls("checkpoint", mnt.path)                # the create is committed: clean
            numbers: list[int] = []
            asker = threading.Thread(target=lambda: numbers.append(flusher.request()))
            asker.start()
            asker.join()
            with trio.fail_after(30):
                while not flusher.answered(numbers[0]):
                    await trio.sleep(0.01)
            writer.stdin.write("held in the page cache\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "written\n"
            assert not mnt.status()["dirty"], "the write reached the daemon without a sync"
            await flusher.syncfs()                     # the earlier answer is not taken yet
            assert mnt.status()["dirty"], "syncfs returned with the answer to an earlier request"
            flusher.take(numbers[0])
        finally:
            await flusher.close()

    try:
        trio.run(syncs)
    finally:
        writer.kill()
        writer.wait(timeout=60)


def test_a_held_descriptor_spares_the_daemon_an_opendir_per_syncfs(new_mount):
    """A group daemon's checkpoints syncfs the mount inside the application's stop: with
    the daemon's descriptor of the mount root, the helper sends the daemon no OPENDIR
    and RELEASEDIR for it (two round trips through the daemon, and a drain wait for the
    RELEASEDIR the kernel sends after close())."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.fuse_requests import FuseRequests
    mnt = new_mount("--checkpoint-interval", "0")
    root = os.open(mnt.path, os.O_RDONLY | os.O_DIRECTORY)
    seen = {}

    async def syncs() -> None:
        flushers = {False: await Flusher.start(str(mnt.path)), True: await Flusher.start(str(mnt.path), root)}
        try:
            for held, flusher in flushers.items():
                await flusher.ready()
                with FuseRequests(mnt.path) as seen[held]:
                    for _ in range(3):
                        await flusher.syncfs()
        finally:
            for flusher in flushers.values():
                await flusher.close()

    try:
        trio.run(syncs)
    finally:
        os.close(root)
    if seen[False].counts is None:
        pytest.skip("the kernel's FUSE trace events are not available")
    assert seen[False].counts["OPENDIR"] == 3          # the way without: what this saves
    assert seen[True].counts["OPENDIR"] == 0 and seen[True].counts["RELEASEDIR"] == 0


def test_a_helper_that_is_gone_is_a_clear_error(new_mount):
    mnt = new_mount("--checkpoint-interval", "0")

    async def sync_with_a_dead_helper() -> None:
        flusher = await Flusher.start(str(mnt.path))
        try:
            flusher.process.kill()
            await flusher.process.wait()
            with pytest.raises(OSError, match="syncfs helper .* exited"):
                await flusher.syncfs()
        finally:
            await flusher.close()

    trio.run(sync_with_a_dead_helper)
