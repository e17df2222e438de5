"""Stats answered from the kernel's attribute cache, and that cache staying right; writes
that do not ask the daemon about file capabilities each time.

A stat of an unchanged file must not reach the daemon (the kernel keeps attributes for
operations.LIVE_TIMEOUT); changes made through another name of the file (a hard link),
by another process, or by unlinking a name must show at once. Frozen views must not move
with the live file, and a clone must not move with its source.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mount_helpers import run_scenario, sls

SCENARIO = Path(__file__).with_name("attr_cache_scenario.py")


@pytest.mark.parametrize("writeback", [False, True], ids=["write_through", "writeback_cache"])
def test_stats_of_unchanged_files_stay_in_the_kernel_and_changes_show(workdir, writeback):
    """(And: a file's writes ask for its security.capability xattr once at most.)"""
    results = run_scenario(SCENARIO, workdir, *["--writeback"] * writeback)
    assert results["client_status"] == 0
    assert results["getattrs"]["unchanged"] == 0          # 400 stats, none reached the daemon
    unchanged = results["client"]["unchanged"]
    assert all(s == unchanged[0] for s in unchanged)
    assert unchanged[0][:3] == [5000, 0o644 & ~_umask(), 2]
    before, after_write, after_chmod, after_unlink = results["client"]["changed"]
    assert after_write[0] == 8000 and after_write[3] > before[3]     # size and mtime via the other name
    assert after_chmod[1] == 0o600 and after_chmod[4] >= after_write[4]
    assert after_unlink[2] == 1 and after_unlink[0] == 8000
    # FUSE_HANDLE_KILLPRIV_V2 (mount.init_flags): the kernel asks whether a file has
    # capabilities to drop once, not before each of 100 writes; the daemon drops them
    assert results["kill_priv_v2"] is True
    assert results["getxattrs"]["writes"] <= 1
    assert results["client"]["capability"] == [True, False]
    assert results["client"]["written"] == [10_000, "cd"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_frozen_views_and_clones_keep_their_own_attributes(mnt):
    live = mnt.path / "dir"
    live.mkdir()
    (live / "f").write_bytes(b"1" * 100)
    checkpoint = json.loads(sls("checkpoint", mnt.path, "--json").stdout)["checkpoint"]
    parent = mnt.path.stat()                 # in the kernel's cache, then changed by the daemon
    sls("clone", live, mnt.path / "copy")
    grafted = mnt.path.stat()
    assert grafted.st_nlink == parent.st_nlink + 1 and grafted.st_mtime_ns > parent.st_mtime_ns
    old = mnt.path / ".sls" / "checkpoints" / str(checkpoint) / "fs" / "dir" / "f"
    copy = mnt.path / "copy" / "f"
    assert old.stat().st_size == copy.stat().st_size == 100      # now in the kernel's cache
    modes = old.stat().st_mode, copy.stat().st_mode
    assert modes[0] & 0o777 != 0o640
    with open(live / "f", "ab") as f:
        f.write(b"2" * 50)
    os.chmod(live / "f", 0o640)
    assert (live / "f").stat().st_size == 150
    assert old.stat().st_size == 100 and copy.stat().st_size == 100
    assert (old.stat().st_mode, copy.stat().st_mode) == modes
    with open(copy, "ab") as f:
        f.write(b"3" * 10)
    assert copy.stat().st_size == 110 and (live / "f").stat().st_size == 150
    assert old.read_bytes() == b"1" * 100
