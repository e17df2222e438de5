"""The in-process API used by the persistence-group daemon: serve, seal, commit, extend .sls."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("embedded_scenario.py")


@pytest.mark.parametrize("options", [[], ["--helper"], ["--writeback", "--helper"]],
                         ids=["drain_kernel_cache", "sync_kernel_cache", "writeback_sync_kernel_cache"])
def test_embedded_file_system_commits_exactly_the_sealed_state(workdir, options):
    (workdir / "mnt").mkdir()
    proc = subprocess.Popen([sys.executable, str(SCENARIO), str(workdir), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(workdir / "mnt")], capture_output=True)
    assert proc.returncode == 0, err
    results = json.loads(out)
    assert results["old"] == "from mmap!!"
    assert results["held"] == "held open"
    assert results["procs"].startswith("procs of ")
    assert results["dirty_after_commit"] is False
    assert "procs/demo" in results["roots"]
