"""`sls restore` with the store's daemon running is done by that daemon (restore_in_place):
a roll back, and a restore after the group alone crashed, end the mount, reset the volume
and mount it again in the same process, without a new daemon's start; the restored
group finds its files on the device number they had. A checkpoint of another mount
point is still restored by a new daemon there."""
from __future__ import annotations

import os
import signal
import threading

from group_helpers import wait_for
from mount.control import request
from test_group_cli import counter_value


def test_a_roll_back_and_a_restore_after_the_group_crashed_are_done_by_the_running_daemon(
        group_store, group_binaries):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--", str(group_binaries / "atomic_counter"),
              "counter")
    wait_for(lambda: (counter_value(store) or 0) > 5, "the target to count")
    daemon, device = store.ps()["daemon"], os.stat(store.mnt).st_dev
    store.sls("checkpoint", "app", "--store", str(store.path), "--name", "early")
    early = wait_for(lambda: counter_value(store), "a counter value")      # >= the value in "early"
    (store.mnt / "written-after-early").write_text("gone after the roll back")
    wait_for(lambda: (counter_value(store) or 0) > early + 300, "the target to count well past 'early'")

    out = store.sls("restore", "app", "--store", str(store.path), "--at", "early").stdout
    assert "group app: restored from checkpoint" in out, out
    assert store.ps()["daemon"] == daemon, "the roll back started a new daemon"
    assert {"unmount", "mount", "restore"} <= set(store.ps()["in_place_restore_ms"])    # (where its time went)
    rolled = wait_for(lambda: counter_value(store), "the rolled-back counter")
    assert rolled < early + 300, f"the roll back kept the newer files: {rolled} vs {early}"
    assert not (store.mnt / "written-after-early").exists()
    assert os.stat(store.mnt).st_dev == device, "the mount came back on another device number"
    wait_for(lambda: (counter_value(store) or 0) > rolled + 20, "the rolled-back target to count on")

    floor = counter_value(store)
    store.checkpoint("app")                    # holds a count >= floor
    os.kill(store.group("app")["pids"][0], signal.SIGKILL)      # the application alone crashes
    wait_for(lambda: not store.group("app")["running"], "the group to end")
    out = store.sls("restore", "app", "--store", str(store.path)).stdout
    assert "group app: restored from checkpoint" in out, out
    assert store.ps()["daemon"] == daemon, "the restore after the group's crash started a new daemon"
    resumed = wait_for(lambda: counter_value(store), "the restored counter")
    assert resumed >= floor, f"the restore went back past the newest checkpoint: {resumed} < {floor}"
    wait_for(lambda: (counter_value(store) or 0) > resumed + 20, "the restored target to count on")
    assert not (store.mnt / "counter.bad").exists()
    assert os.stat(store.mnt).st_dev == device
    assert [g["group"] for g in store.ps()["groups"]] == ["app"]
    store.sls("stop", "--store", str(store.path))


def test_a_restore_at_another_mount_point_starts_a_daemon_there(group_store, group_binaries, tmp_path):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--", str(group_binaries / "atomic_counter"),
              "counter")
    wait_for(lambda: (counter_value(store) or 0) > 5, "the target to count")
    daemon = store.ps()["daemon"]
    store.checkpoint("app")
    elsewhere = tmp_path / "elsewhere"
    out = store.sls("restore", "app", "--store", str(store.path), "--mountpoint", str(elsewhere)).stdout
    assert f"running in {elsewhere}" in out, out
    assert store.ps()["daemon"] != daemon
    wait_for(lambda: (elsewhere / "counter").exists(), "the counter at the new mount point")
    store.sls("stop", "--store", str(store.path))


def test_restores_asked_at_once_are_done_one_after_the_other(group_store, group_binaries):
    """Several `restore` requests at once (a user's second `sls restore` while the first one
    runs, a script's retries): each is done whole before the next begins. Before, the next
    one killed the groups of the moment (none: the first had ended them) while the first
    restored, then ended the mount under the group the first had restored, whose periodic
    checkpoint then found the mount's descriptor closed (-1): the daemon died of it."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "100", "--",
              str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: (counter_value(store) or 0) > 5, "the target to count")
    daemon = store.ps()["daemon"]
    for _ in range(4):
        replies: list[dict] = []
        asking = [threading.Thread(target=lambda: replies.append(request(store.path, "restore", group="app")))
                  for _ in range(3)]
        for thread in asking:
            thread.start()
        for thread in asking:
            thread.join()
        assert [r["in_place"] for r in replies] == [True] * 3, replies
        assert store.ps()["daemon"] == daemon, "the daemon died of restores asked at once"
        pids = store.group("app")["pids"]
        counting = wait_for(lambda: counter_value(store), "the restored counter")
        wait_for(lambda: (counter_value(store) or 0) > counting + 20, "the restored target to count on")
        assert store.group("app")["pids"] == pids
    status = store.ps()
    assert status["daemon"] == daemon and [g["group"] for g in status["groups"]] == ["app"], status
    store.sls("stop", "--store", str(store.path))
