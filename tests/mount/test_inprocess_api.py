"""The in-process API used by the persistence-group daemon: serve, seal, commit, extend .sls."""
from __future__ import annotations

from pathlib import Path

import pytest

from mount_helpers import run_scenario

SCENARIO = Path(__file__).with_name("embedded_scenario.py")


@pytest.mark.parametrize("options", [[], ["--helper"], ["--writeback", "--helper"],
                                     ["--writeback", "--helper", "--no-fsync-commits"],
                                     ["--writeback", "--helper", "--no-fsync-commits", "--helper-on-demand"]],
                         ids=["drain_kernel_cache", "sync_kernel_cache", "writeback_sync_kernel_cache",
                              "group_daemon_fsync", "syncfs_helper_on_demand"])
def test_embedded_file_system_commits_exactly_the_sealed_state(workdir, options):
    results = run_scenario(SCENARIO, workdir, *options)
    assert results["old"] == "from mmap!!"
    assert results["held"] == "held open"
    assert results["fsynced"] == "fsynced"
    if "--no-fsync-commits" in options:    # the fsyncs committed nothing, the data reached us
        assert results["fsync"] == {"commits": 0, "data_in_daemon": True, "daemon_has": "fsynced"}
    else:                                  # each fsync committed what it wrote
        assert results["fsync"] == {"commits": 2, "data_in_daemon": False, "daemon_has": "fsynced"}
    assert results["procs"].startswith("procs of ")
    assert results["dirty_after_commit"] is False
    assert "procs/demo" in results["roots"]
    # the writeback cache's syncfs helper starts with the mount, unless asked to start when
    # first needed (a group daemon's restore then has the CPU to itself); either way one runs
    # once the kernel's writes are synced
    assert results["helpers_at_mount"] == ("--writeback" in options and "--helper-on-demand" not in options)
    assert results["helpers_after_sync"] == ("--helper" in options)
