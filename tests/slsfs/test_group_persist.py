"""`sls persist PID`: a process started outside slsfs joins a group; after a crash it is
restored (in a new PID namespace, with its PID) and counts on."""
from __future__ import annotations

import os
import subprocess

from group_helpers import read_counter, wait_for


def test_persist_running_process_then_restore(group_store, group_binaries):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "anchor", "--hz", "1", "--",
              str(group_binaries / "deep_sleeper"))
    outsider = subprocess.Popen([str(group_binaries / "atomic_counter"), "counter"], cwd=store.mnt,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > 20, "the outside process to count")
        store.sls("persist", str(outsider.pid), "--store", str(store.path), "--name", "adopted", "--hz", "5")
        assert store.group("adopted")["running"]
        store.checkpoint("adopted")
        store.crash()
        outsider.wait(timeout=60)
        store.sls("restore", "adopted", "--store", str(store.path))
        start = wait_for(lambda: read_counter(store.mnt / "counter"), "the restored counter")
        wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > start + 20, "the restored process to count on")
        assert not (store.mnt / "counter.bad").exists()
        restored_pid = store.group("adopted")["pids"][0]
        ns_pid = [l for l in open(f"/proc/{restored_pid}/status") if l.startswith("NSpid:")][0].split()[-1]
        assert int(ns_pid) == outsider.pid, "the restored process keeps its PID (in its own namespace)"
        store.sls("stop", "--store", str(store.path))
    finally:
        if outsider.poll() is None:
            os.kill(outsider.pid, 9)
            outsider.wait()


def test_persist_under_a_plain_mount_says_to_run_the_program_in_a_group(group_store, group_binaries):
    """`sls mount`'s daemon runs no groups and cannot adopt a process (its mount cannot be
    handed over while the process uses it): `sls persist` says what to do instead, and
    the mount and the process go on as they were."""
    store = group_store
    store.mnt.mkdir()
    store.sls("mount", str(store.path), str(store.mnt))
    outsider = subprocess.Popen([str(group_binaries / "atomic_counter"), "counter"], cwd=store.mnt,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        counted = wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > 20 and read_counter(store.mnt / "counter"),
                           "the process to count")
        refused = store.sls("persist", str(outsider.pid), "--store", str(store.path), check=False)
        assert refused.returncode == 1 and "cannot take a process in" in refused.stderr, refused.stderr
        assert "sls run --store" in refused.stderr, refused.stderr
        wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > counted + 20, "the process to count on")
    finally:
        os.kill(outsider.pid, 9)
        outsider.wait()
    store.sls("umount", str(store.mnt))
