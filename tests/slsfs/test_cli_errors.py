"""A command given a path that is no store and in no mount fails with one line that says
so (exit status 1), never a Python traceback: `sls clone` outside a mount printed one."""
from __future__ import annotations

import subprocess
import sys

import pytest

VERBS = [["clone", "{d}/a", "{d}/b"], ["snapshot", "{d}"], ["checkpoint", "{d}"], ["log", "{d}"],
         ["stat", "{d}"], ["gc", "{d}"], ["fsck", "{d}"], ["umount", "{d}"]]


@pytest.mark.parametrize("verb", VERBS, ids=[v[0] for v in VERBS])
def test_a_path_outside_any_mount_is_a_one_line_error(tmp_path, verb):
    (tmp_path / "a").mkdir()
    args = [a.format(d=tmp_path) for a in verb]
    result = subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("sls: ") and str(tmp_path) in line and "mount" in line, line
