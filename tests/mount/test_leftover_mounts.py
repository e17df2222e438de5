"""The suite's safety net (tests/conftest.py) unmounts, at the end of a session, the FUSE
mounts its tests left behind, also those under the mount fixtures' workdirs (short paths
in /tmp, outside pytest's basetemp: a session interrupted there left a mount and its
daemon running)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mount_helpers import is_mounted, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_a_mount_left_in_a_workdir_is_unmounted_at_the_end_of_the_session(tmp_path):
    record = tmp_path / "left"
    session = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              f"--basetemp={tmp_path / 'inner'}", "tests/mount/leaky_session.py"],
                             cwd=REPO, env={**os.environ, "SLSFS_LEFT_MOUNT": str(record)},
                             capture_output=True, text=True, timeout=300)
    assert session.returncode == 0, session.stdout + session.stderr
    left = Path(record.read_text())
    try:
        assert not is_mounted(left), f"the session ended with {left} mounted"
        assert "a test left" in session.stderr, session.stderr     # and said so
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(left)], capture_output=True)
    wait_for(lambda: not left.parent.exists(), "the session's short_tmp to be removed")
