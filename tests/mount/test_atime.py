"""atime of files read through a slsfs mount (relatime, the default; the noatime and
strictatime mount options: test_mount_helper.py).

FUSE inodes are S_NOATIME: the kernel stamps no atime itself, and a read served from its
page cache (slsfs keeps pages across opens) never reaches the daemon, so the daemon stamps
the atime when the file is opened for reading (xfstests generic/003)."""
from __future__ import annotations

import os
import time


def read_all(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_relatime_a_read_from_the_page_cache_stamps_the_atime_once(mnt):
    path = mnt.path / "f"
    path.write_bytes(b"cached pages\n")       # the kernel holds the written pages
    assert read_all(path) == b"cached pages\n"
    written = os.stat(path)
    os.utime(path, ns=(written.st_mtime_ns - 10**9, written.st_mtime_ns))   # atime older than mtime
    before = os.stat(path)
    time.sleep(0.05)                           # past the kernel's time of the write (its clock
    assert read_all(path) == b"cached pages\n"  # can be a tick ahead of the coarse one we stamp)
    after = os.stat(path)
    assert after.st_atime_ns > max(before.st_mtime_ns, before.st_ctime_ns)
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    time.sleep(0.01)
    read_all(path)                             # relatime: newer than mtime and ctime, so kept
    assert os.stat(path).st_atime_ns == after.st_atime_ns
    mnt.umount()
    mnt.mount()
    assert os.stat(path).st_atime_ns == after.st_atime_ns


def test_opening_for_writing_only_leaves_the_atime(mnt):
    path = mnt.path / "f"
    path.write_bytes(b"x")
    stamp = os.stat(path)
    os.utime(path, ns=(stamp.st_mtime_ns - 10**9, stamp.st_mtime_ns))
    before = os.stat(path).st_atime_ns
    os.close(os.open(path, os.O_RDWR))       # read and write: counts as a read
    assert os.stat(path).st_atime_ns > before
    os.utime(path, ns=(stamp.st_mtime_ns - 10**9, stamp.st_mtime_ns))
    fd = os.open(path, os.O_WRONLY)
    os.close(fd)
    assert os.stat(path).st_atime_ns == stamp.st_mtime_ns - 10**9
