"""Suite-wide safety net: whatever a failing test left behind is cleaned up at the end.

Each layer's fixtures unmount and kill what they start; this only catches leaks, so
that one broken test cannot leave FUSE mounts behind for the next run. Leaks are
reported on stderr so they get fixed rather than hidden.
"""
from __future__ import annotations

import subprocess
import sys

import pytest


def _fuse_mounts_under(prefix: str) -> list[str]:
    found = []
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            mountpoint = fields[1].replace("\\040", " ")
            if fields[2].startswith("fuse") and mountpoint.startswith(prefix):
                found.append(mountpoint)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_leftover_mounts(tmp_path_factory):
    base = str(tmp_path_factory.getbasetemp())
    yield
    for mountpoint in reversed(_fuse_mounts_under(base)):
        print(f"\nconftest: a test left {mountpoint} mounted; unmounting it", file=sys.stderr)
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)
        subprocess.run(["umount", "-l", mountpoint], check=False, stderr=subprocess.DEVNULL)
