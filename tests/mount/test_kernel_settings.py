"""What the daemon tells the kernel about its mount, read back from the kernel."""
from __future__ import annotations

import os
from pathlib import Path

from mount.filesystem import READAHEAD_KIB


def device_of(path: Path) -> str:
    """major:minor of the mount at `path`, from mountinfo (newest mount there)."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        devices = [line.split()[2] for line in f if line.split()[4] == real]
    assert devices, f"{path} is not mounted"
    return devices[-1]


def test_read_ahead_is_raised_after_init(mnt):
    ra = Path(f"/sys/class/bdi/{device_of(mnt.path)}/read_ahead_kb")
    assert int(ra.read_text()) == READAHEAD_KIB
    data = os.urandom(3 * READAHEAD_KIB * 1024 + 12345)
    (mnt.path / "big").write_bytes(data)
    assert (mnt.path / "big").read_bytes() == data      # reads in read-ahead-sized requests
