"""A second `sls mount STORE MNT2` of a store a live daemon serves: a bind mount of the live
mount, served by the same daemon (one superblock, as a kernel file system mounted twice
from one device: xfstests generic/732); `sls umount` of either leaves the other. What
belongs to the daemon must match, or the mount is refused saying what to do."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mount_helpers import is_mounted, pid_alive, sls, wait_for


@pytest.fixture
def second(workdir):
    path = workdir / "second"
    path.mkdir()
    try:
        yield path
    finally:
        if is_mounted(path):
            sls("umount", "--force", path, check=False)


def test_a_second_mount_is_the_same_file_system_and_either_unmounts_alone(mnt, second):
    first = mnt.path
    done = sls("mount", mnt.store, second)
    assert "serves both" in done.stdout, done.stdout
    assert os.stat(first).st_dev == os.stat(second).st_dev
    (first / "A").mkdir()
    (first / "B").mkdir()
    (first / "A" / "f").write_text("moved about")
    os.rename(first / "A" / "f", first / "B" / "f")         # generic/732's sequence
    assert (second / "B" / "f").read_text() == "moved about"
    os.rename(second / "B" / "f", second / "A" / "f")
    assert (first / "A" / "f").read_text() == "moved about"
    os.rename(first / "A" / "f", first / "B" / "f")

    done = sls("umount", first)
    assert "goes on serving" in done.stdout and not is_mounted(first), done.stdout
    assert pid_alive(mnt.pid)
    (second / "after").write_text("written through the second mount")
    sls("umount", second)
    assert not is_mounted(second) and not pid_alive(mnt.pid)

    mnt.mount()
    assert (first / "B" / "f").read_text() == "moved about"
    assert (first / "after").read_text() == "written through the second mount"
    mnt.umount()


def test_a_second_mount_takes_its_own_per_mount_flags(mnt, second):
    """`mount -t fuse.slsfs STORE MNT2 -o ro` (the `slsfs` helper) makes MNT2 read-only
    and leaves the first mount writable."""
    helper = Path(sys.executable).parent / "slsfs"
    done = subprocess.run([str(helper), str(mnt.store), str(second), "-o", "ro,nosuid"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(OSError) as refused:
        (second / "new").write_text("x")
    assert refused.value.errno == errno.EROFS
    (mnt.path / "new").write_text("through the first")
    assert (second / "new").read_text() == "through the first"
    sls("umount", second)
    mnt.umount()


@pytest.mark.parametrize("extra, says", [
    (("--volume", "other"), "volume 'main'"),
    (("--checkpoint-interval", "500"), "checkpoints every 10 ms"),
    (("--allow-other",), "without --allow-other"),
    (("--foreground",), "without --foreground"),
])
def test_a_second_mount_asking_for_another_daemon_is_refused(mnt, second, extra, says):
    refused = sls("mount", mnt.store, second, *extra, check=False)
    assert refused.returncode == 1 and says in refused.stderr and str(mnt.path) in refused.stderr, refused
    assert not is_mounted(second)
    (mnt.path / "still").write_text("served")
    mnt.umount()


def test_a_second_mount_left_alone_has_the_kernels_cached_writes_in_each_checkpoint(mnt, second):
    """Once the first mount is gone, the daemon's syncfs helper follows the file system to the
    second one. Before, it syncfs()ed the directory left at the first mount point (another
    file system), so what the kernel caches (a file written and still open) missed every
    periodic checkpoint until the kernel's own writeback, ~30 s later."""
    sls("mount", mnt.store, second)
    sls("umount", mnt.path)

    def newest_checkpoint_holds(text: str) -> bool:
        try:
            return (second / ".sls" / "latest" / "fs" / "open").read_text() == text
        except FileNotFoundError:
            return False

    with open(second / "open", "w") as f:
        f.write("cached by the kernel")
        f.flush()
        wait_for(lambda: newest_checkpoint_holds("cached by the kernel"),
                 "a periodic checkpoint holding the kernel's cached write", timeout=20)


@pytest.mark.parametrize("first_unmounted", [False, True])
def test_a_daemon_ended_by_a_signal_detaches_every_mount_it_served(mnt, second, first_unmounted):
    """SIGTERM ends the daemon as `sls umount` would: before, its second mount stayed
    attached, answering ENOTCONN (and, with the first unmounted, libfuse failed to unmount
    the first mount point)."""
    sls("mount", mnt.store, second)
    if first_unmounted:
        sls("umount", mnt.path)
    (second / "kept").write_text("written before the signal")
    os.kill(mnt.pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(mnt.pid), "the daemon to end")
    assert not is_mounted(second) and not is_mounted(mnt.path)
    assert "failed to unmount" not in (Path(mnt.store) / "mount.log").read_text()
    mnt.mount()
    assert (mnt.path / "kept").read_text() == "written before the signal"
