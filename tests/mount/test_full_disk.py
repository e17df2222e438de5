"""A full disk under the store: writers get ENOSPC, the store stays consistent, and work
continues once there is space again (the tmpfs is grown, as an admin would free space)."""
from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from mount_helpers import sls


def test_enospc_then_more_space_lets_work_continue(new_mount, small_disk):
    mnt = new_mount(root=small_disk / "m")
    (mnt.path / "keep").write_bytes(b"fsynced before the disk filled")
    fd = os.open(mnt.path / "keep", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    block = os.urandom(1024 * 1024)
    with pytest.raises(OSError) as e:
        with open(mnt.path / "filler", "wb") as f:
            for _ in range(200):                  # 200 MiB of unique random data: cannot fit
                f.write(os.urandom(1024 * 1024))
                f.flush()
            os.fsync(f.fileno())
    assert e.value.errno == errno.ENOSPC
    assert (mnt.path / "keep").read_bytes() == b"fsynced before the disk filled"
    os.unlink(mnt.path / "filler")
    subprocess.run(["mount", "-o", "remount,size=512m", str(small_disk)], check=True)
    (mnt.path / "after").write_bytes(block)
    fd = os.open(mnt.path / "after", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    mnt.umount()
    fsck = json.loads(sls("fsck", mnt.store, "--json").stdout)
    assert fsck["clean"], fsck["problems"]
    mnt.mount()
    assert (mnt.path / "keep").read_bytes() == b"fsynced before the disk filled"
    assert (mnt.path / "after").read_bytes() == block
