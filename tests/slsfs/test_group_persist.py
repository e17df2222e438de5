"""`sls persist PID`: a process started outside slsfs joins a group (of the daemon that
runs, or of one started for it); after a crash it is restored (in a new PID namespace,
with its PID) and counts on."""
from __future__ import annotations

import os
import subprocess
import sys

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
        for taken, why in ((store.group("anchor")["pids"][0], "is in group 'anchor' already"),
                           (store.ps()["daemon"], "is this slsfs daemon")):
            refused = store.sls("persist", str(taken), "--store", str(store.path), check=False)
            assert refused.returncode == 1 and why in refused.stderr, refused.stderr
        store.sls("persist", str(outsider.pid), "--store", str(store.path), "--name", "adopted", "--hz", "5")
        assert store.group("adopted")["running"]
        again = store.sls("persist", str(outsider.pid), "--store", str(store.path), "--name", "twice", check=False)
        assert again.returncode == 1 and "is in group 'adopted' already" in again.stderr, again.stderr
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


def test_persist_with_no_daemon_starts_one_for_the_process(group_store, tmp_path):
    """`sls persist PID` on a store no daemon serves starts one (as `sls run` does), whose
    group holds the process: checkpointed, and after a crash restored with its PID, its
    memory from the checkpoint. Its files live outside the mount: not part of it."""
    store = group_store
    progress = tmp_path / "progress"
    outsider = subprocess.Popen([sys.executable, "-c", COUNTER, str(progress)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: count_in(progress) > 20, "the process to count")
        store.sls("persist", str(outsider.pid), "--store", str(store.path), "--name", "adopted", "--hz", "5")
        assert store.group("adopted")["running"] and store.ps()["mountpoint"] == str(store.mnt)
        at_checkpoint = count_in(progress)
        store.checkpoint("adopted")
        wait_for(lambda: count_in(progress) > at_checkpoint + 50, "the process to count past the checkpoint")
        store.crash()
        outsider.wait(timeout=60)
        crashed_at = count_in(progress)
        store.sls("restore", "adopted", "--store", str(store.path))
        wait_for(lambda: count_in(progress) != crashed_at, "the restored process to count")
        assert count_in(progress) < crashed_at, "restored, the process counts on from its checkpoint's memory"
        restored_pid = store.group("adopted")["pids"][0]
        ns_pid = [l for l in open(f"/proc/{restored_pid}/status") if l.startswith("NSpid:")][0].split()[-1]
        assert int(ns_pid) == outsider.pid
        store.sls("stop", "--store", str(store.path))
    finally:
        if outsider.poll() is None:
            os.kill(outsider.pid, 9)
            outsider.wait()


def test_persist_under_a_plain_mount_takes_it_over_unless_the_process_uses_it(group_store, group_binaries,
                                                                            tmp_path):
    """`sls mount`'s daemon runs no groups: `sls persist` takes its mount over (the slsfs
    daemon then serves the same volume at the same place), as `sls run` does. While the
    process works in that mount it cannot be: refused, naming it and saying to run the
    program in a group instead, and the mount and the process go on as they were."""
    store = group_store
    store.mnt.mkdir()
    store.sls("mount", str(store.path), str(store.mnt))
    inside = subprocess.Popen([str(group_binaries / "atomic_counter"), "counter"], cwd=store.mnt,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    outside = subprocess.Popen([sys.executable, "-c", COUNTER, str(tmp_path / "progress")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        counted = wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > 20 and read_counter(store.mnt / "counter"),
                           "the process to count")
        refused = store.sls("persist", str(inside.pid), "--store", str(store.path), check=False)
        assert refused.returncode == 1 and "is busy" in refused.stderr, refused.stderr
        assert f"{inside.pid}" in refused.stderr and "sls run --store" in refused.stderr, refused.stderr
        wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > counted + 20, "the process to count on")
        os.kill(inside.pid, 9)
        inside.wait()
        wait_for(lambda: count_in(tmp_path / "progress") > 0, "the other process to count")
        store.sls("persist", str(outside.pid), "--store", str(store.path), "--name", "outside")
        assert store.group("outside")["running"] and store.ps()["mountpoint"] == str(store.mnt)
        assert (store.mnt / "counter").exists(), "the group daemon serves the volume `sls mount` served"
    finally:
        for proc in (inside, outside):
            if proc.poll() is None:
                os.kill(proc.pid, 9)
                proc.wait()
    store.sls("stop", "--store", str(store.path))


def count_in(path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


# counts in memory, writing each number over the last in the file argv[1] (outside any mount)
COUNTER = """
import os, sys, time
n = 0
while True:
    n += 1
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(n))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.005)
"""


def test_persist_refuses_the_commands_own_tree_and_starts_nothing(group_store):
    """Adopting the shell that runs `sls persist` (or any ancestor) would freeze the command
    at its first checkpoint: refused at once, as `sls checkpoint PID` refuses it, and no
    daemon is left serving; so is a PID that names no process."""
    store = group_store
    shell = subprocess.run(["/bin/sh", "-c", f"{sys.executable} -m slsfs.cli persist $$ --store {store.path}"],
                           capture_output=True, text=True, timeout=120)
    assert shell.returncode == 1 and "one of its ancestors" in shell.stderr, shell.stderr
    gone = subprocess.Popen(["true"])
    gone.wait()
    missing = store.sls("persist", str(gone.pid), "--store", str(store.path), check=False)
    assert missing.returncode == 1 and f"no process {gone.pid}" in missing.stderr, missing.stderr
    assert not (store.path / "control.sock").exists(), "no daemon was started for a refused persist"
