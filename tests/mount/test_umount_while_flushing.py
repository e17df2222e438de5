"""A plain mount's umount is never refused because of the daemon's own syncfs helper.

With the writeback cache, a plain `sls mount` syncfs()es itself every FLUSH_EVERY_S while
a file is (or was, since the last flush) open for writing, through its helper process
(mount.flusher), which opens the mount's root for each syncfs. umount(2) refuses (EBUSY) a
mount that an open file refers to: a umount(8) landing in that open-syncfs-close failed
(seen once in the suite at load 7-8). The helper now opens the root through a private
clone of the mount, which umount(2) does not count.
"""
from __future__ import annotations

import ctypes
import errno
import os
import random
import subprocess
import sys

from mount.flusher import is_helper_of
from mount_helpers import is_mounted, wait_for

MS_BIND = 4096
MNT_DETACH = 2
ATTEMPTS = 150
_libc = ctypes.CDLL(None, use_errno=True)

# keeps its file open for writing and dirties 64 KiB of its 4 MiB every few ms, so that
# every periodic flush has write-back to wait for (the helper holds the root open longer)
WRITER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
chunk, n = os.urandom(1 << 16), 0
print("writing", flush=True)
while True:
    os.pwrite(fd, chunk, (n % 64) << 16)
    n += 1
    time.sleep(0.002)
"""


def _umount(path: str, flags: int = 0) -> int:
    """umount2(2): 0 or the errno."""
    return 0 if _libc.umount2(os.fsencode(path), flags) == 0 else ctypes.get_errno()


def _top_mount_id(path: str) -> int:
    """The id of the mount on top at `path` (mountinfo lists a mount after its parent)."""
    with open("/proc/self/mountinfo") as f:
        return [int(line.split()[0]) for line in f if line.split()[4] == path][-1]


def _helper_of(daemon: int) -> int:
    """The pid of `daemon`'s syncfs helper (one per mount, for the mount's life)."""
    return next(int(pid) for pid in os.listdir("/proc") if pid.isdigit() and is_helper_of(pid, daemon))


def _holds(pid: int, mount_id: int) -> bool:
    """Whether process `pid` holds a descriptor on mount `mount_id` now."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                if f"mnt_id:\t{mount_id}\n" in f.read():
                    return True
    except OSError:                # (it closed it meanwhile)
        pass
    return False


def test_a_umount_is_not_refused_while_the_daemon_flushes_its_mount(new_mount):
    """The mount point gets a bind mount of the mount itself on top, ATTEMPTS times, each
    unmounted at a random moment while a writer (whose file, opened before, is held on the
    mount beneath) keeps the periodic flushes busy: the helper's open of the mount point
    lands on the bind, so a umount of the bind meets it whenever it is open (the mount
    beneath stays, busy with the writer's file: the test can go on). A refusal counts
    when the helper holds a descriptor on the bind right after it: any path walk pins a
    mount for its moment (the helper's open_tree too), which a umount can meet under load
    (1 of 150 once, at load 20)."""
    mnt = new_mount()
    path = str(mnt.path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, os.path.join(path, "dirty")],
                              stdout=subprocess.PIPE, text=True)
    refused = 0
    try:
        assert writer.stdout.readline() == "writing\n"
        flushes = mnt.status()["kernel_flushes"]
        wait_for(lambda: mnt.status()["kernel_flushes"] > flushes + 2, "the periodic flushes to run")
        helper = _helper_of(mnt.pid)
        rng = random.Random(0)
        for _ in range(ATTEMPTS):
            assert _libc.mount(os.fsencode(path), os.fsencode(path), None, MS_BIND, None) == 0, \
                os.strerror(ctypes.get_errno())
            _libc.usleep(rng.randrange(0, 50_000))
            bind = _top_mount_id(path)
            err = _umount(path)
            if err:
                assert err == errno.EBUSY, os.strerror(err)
                refused += _holds(helper, bind)
                assert _umount(path, MNT_DETACH) == 0
        flushes_during = mnt.status()["kernel_flushes"] - flushes
    finally:
        writer.kill()
        writer.wait(timeout=60)
    assert flushes_during > 10, "the writer did not keep the daemon flushing"
    assert refused == 0, f"{refused} of {ATTEMPTS} umounts were refused (EBUSY) while the helper held the mount"
    assert is_mounted(mnt.path)
