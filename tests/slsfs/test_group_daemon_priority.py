"""The group daemon's session runs at a raised CPU share (slsfs.daemon_priority); the
groups it runs, fresh or restored after a crash, keep their own."""
from __future__ import annotations

import os

from group_helpers import autogroup_nice, wait_for
from slsfs.daemon_priority import AUTOGROUP_NICE


def _check(store) -> None:
    status = store.ps()
    daemon, pids = status["daemon"], status["groups"][0]["pids"]
    assert autogroup_nice(daemon) == AUTOGROUP_NICE
    for pid in pids:
        assert os.getsid(pid) != os.getsid(daemon), "a group process shares the daemon's session"
        assert autogroup_nice(pid) == 0
        assert os.getpriority(os.PRIO_PROCESS, pid) == 0


def test_the_daemon_session_has_a_raised_share_and_its_groups_their_own(group_store):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "5", "--",
              "sh", "-c", "while :; do date +%s%N > tick; sleep 0.05; done")
    wait_for(lambda: (store.mnt / "tick").exists(), "the group to run")
    _check(store)
    store.checkpoint("app")
    store.crash()
    store.sls("restore", "app", "--store", str(store.path))
    _check(store)
    store.sls("stop", "--store", str(store.path))
