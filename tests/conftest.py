"""Suite-wide safety net: whatever a failing test left behind is cleaned up at the end.

Each layer's fixtures unmount and kill what they start; this only catches leaks, so
that one broken test cannot leave FUSE mounts behind for the next run. Leaks are
reported on stderr so they get fixed rather than hidden.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


@pytest.fixture(scope="session")
def short_tmp() -> Path:
    """This session's directory for tests whose paths must be short (a store's control
    socket path has at most 107 bytes) or enterable by other users (pytest's basetemp is
    under a mode-0700 directory): /tmp/slsfs-test-XXXXXXXX, mode 0755. The safety net below
    covers it as it does the basetemp; removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="slsfs-test-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def no_leftover_mounts(request, tmp_path_factory, short_tmp):
    roots = [str(tmp_path_factory.getbasetemp()), str(short_tmp)]
    yield
    for mountpoint in reversed([m for root in roots for m in _fuse_mounts_under(root + "/")]):
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\nconftest: a test left {mountpoint} mounted; unmounting it", file=sys.stderr)
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)
        subprocess.run(["umount", "-l", mountpoint], check=False, stderr=subprocess.DEVNULL)
