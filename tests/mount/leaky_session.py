"""Not collected by the suite (no test_ prefix): the session that test_leftover_mounts.py
runs, whose one test leaves a mount in its workdir behind, as an interrupted test does."""
from __future__ import annotations

import os
from pathlib import Path

from mount_helpers import is_mounted, sls


def test_leaves_its_mount_behind(workdir):
    store, mountpoint = workdir / "store", workdir / "mnt"
    mountpoint.mkdir()
    sls("init", store)
    sls("mount", store, mountpoint)
    assert is_mounted(mountpoint)
    Path(os.environ["SLSFS_LEFT_MOUNT"]).write_text(str(mountpoint))
