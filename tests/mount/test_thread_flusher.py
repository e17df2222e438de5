"""mount.flusher.ThreadFlusher: the syncfs helper asked from a plain thread (a group
daemon's tracer syncs its mount that way while the group is frozen).

With the writeback cache, a write stays in the kernel until something syncs the mount:
the daemon sees it (its file system turns dirty) only after ThreadFlusher.syncfs().
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from mount.flusher import ThreadFlusher
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


def test_a_write_held_in_the_kernel_reaches_the_daemon_at_syncfs(new_mount):
    mnt = new_mount("--checkpoint-interval", "0")      # no periodic flushes
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt.path / "held")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    flusher = ThreadFlusher(str(mnt.path))
    try:
        assert writer.stdout.readline() == "opened\n"
        sls("checkpoint", mnt.path)                    # the create is committed: clean
        assert not mnt.status()["dirty"]
        writer.stdin.write("held in the page cache\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "written\n"
        # the kernel writes back on its own only after ~30 s (dirty_expire_centisecs)
        assert not mnt.status()["dirty"], "the write reached the daemon without a sync"
        flusher.syncfs()
        wait_for(lambda: mnt.status()["dirty"], "the daemon to have the write", 30)
        flusher.syncfs()                               # one helper, many syncs
    finally:
        flusher.close()
        writer.kill()
        writer.wait(timeout=60)
    assert flusher.process.returncode is not None


def test_a_helper_that_is_gone_is_a_clear_error(new_mount):
    mnt = new_mount("--checkpoint-interval", "0")
    flusher = ThreadFlusher(str(mnt.path))
    try:
        flusher.process.kill()
        flusher.process.wait(timeout=60)
        with pytest.raises(OSError, match="syncfs helper .* exited"):
            flusher.syncfs()
    finally:
        flusher.close()
