"""A group restored after a crash finds the files it uses on the device number they had:
its mount is made again on that number (mount.device_number), the stale mount's or the
one its checkpoint record names (after a reboot, or `sls mount` first), though lower
numbers fell free meanwhile, which a new mount takes first. Programs compare (st_dev,
st_ino) of what they opened before (tar: "Directory renamed before its status could be
extracted")."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

import pytest

from mount.device_number import hold_through

from group_helpers import wait_for
from tmpfs import tmpfs

# Makes a directory, notes its (st_dev, st_ino), and once `go` appears says whether they are the same
STAT_KEEPER = """
import os, time
os.mkdir("d")
before = os.stat("d")
open("ready", "w").close()
while not os.path.exists("go"):
    time.sleep(0.02)
after = os.stat("d")
with open("verdict.tmp", "w") as f:
    f.write("same" if (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino) else
            f"changed from {os.major(before.st_dev)}:{os.minor(before.st_dev)} inode {before.st_ino} "
            f"to {os.major(after.st_dev)}:{os.minor(after.st_dev)} inode {after.st_ino}")
os.rename("verdict.tmp", "verdict")
time.sleep(1000)
"""


@pytest.mark.parametrize("back_by", ["restore", "reboot then restore", "sls mount then restore",
                                     "sls mount elsewhere then restore"])
def test_a_restored_group_sees_its_files_on_the_device_number_they_had(group_store, tmp_path, back_by):
    store = group_store
    with contextlib.ExitStack() as lower_numbers:       # taken before the group's mount, freed before its restore
        for n in range(3):
            lower_numbers.enter_context(tmpfs(tmp_path / f"hole{n}", "1m"))
        store.sls("run", "--store", str(store.path), "--name", "k", "--hz", "2", "--",
                  sys.executable, "-c", STAT_KEEPER)
        wait_for(lambda: (store.mnt / "ready").exists(), "the directory to be made")
        store.checkpoint("k")
    device = os.stat(store.mnt).st_dev
    store.crash()
    if back_by in ("reboot then restore", "sls mount then restore"):    # no stale mount after a reboot
        # (nor after `sls mount --force` there); `sls mount` elsewhere leaves it, holding the number
        subprocess.run(["umount", "-l", str(store.mnt)], check=True)
        wait_for(lambda: not _device_anywhere(device), "the stale mount's device number to be free")
    # the lazily unmounted holes live on in the mount namespaces of processes that copied
    # them (the killed group's, until the kernel has torn it down): freed during the restore,
    # a lower number would go to its mount (seen under load), which is not what this tests
    holes = [str(tmp_path / f"hole{n}") for n in range(3)]
    wait_for(lambda: not _mounted_anywhere(holes), "the holes' file systems to be gone")
    if back_by == "sls mount then restore":        # its number held meanwhile: the plain mount gets another
        with _holding(os.minor(device)):
            store.sls("mount", str(store.path), str(store.mnt))
        assert os.stat(store.mnt).st_dev != device
    where = store.mnt
    if back_by == "sls mount elsewhere then restore":              # the restore takes that mount over
        where = tmp_path / "elsewhere"
        where.mkdir()
        store.sls("mount", str(store.path), str(where))
    try:
        store.sls("restore", "k", "--store", str(store.path))
        (where / "go").touch()
        verdict = wait_for(lambda: (where / "verdict").exists() and (where / "verdict").read_text(),
                           "the restored process's verdict")
        assert verdict == "same"
        store.sls("stop", "--store", str(store.path))
    finally:
        if where != store.mnt:
            subprocess.run(["fusermount3", "-u", "-z", str(where)], capture_output=True)


@contextlib.contextmanager
def _holding(minor: int) -> Iterator[None]:
    """Anonymous device 0:`minor` (and the free numbers below it) held, so that a mount made
    meanwhile gets another (mount.device_number; the stale mount's superblock may keep it a
    moment); the test skips if another file system keeps it."""
    held = hold_through(minor, wait_s=30)
    try:
        if os.minor(os.fstat(held[-1]).st_dev) != minor:
            pytest.skip(f"device 0:{minor} is held by another file system")
        yield
    finally:
        for fd in held:
            os.close(fd)


def _mounted_anywhere(paths: list[str]) -> bool:
    """Whether any process's mount namespace still has a mount at one of `paths`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                if any(line.split()[4] in paths for line in f):
                    return True
        except OSError:
            continue
    return False


def _device_anywhere(device: int) -> bool:
    """Whether any process's mount namespace still has a mount of `device` (st_dev)."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                if any(line.split()[2] == wanted for line in f):
                    return True
        except OSError:
            continue
    return False
