"""A group ends with its first process's exit status (`sls ps`: "exited with status N" /
"killed by signal N"), started afresh (its launcher, coreutils' timeout, passes on how
the namespace's PID 1 ended) or restored (the restore's launcher, checkpointer/stub.py's
reaper, does), and nothing but what the group wrote is in its output."""
from __future__ import annotations

import os
import signal

from group_helpers import wait_for

# PID 1 of the group: waits for the file `go` in the volume, then exits with its number
WAITER = 'while [ ! -e go ]; do sleep 0.02; done; exit $(cat go)'


def ended(store, name: str) -> dict:
    return wait_for(lambda: (g := store.group(name)) and not g["running"] and g["exit_status"] is not None and g,
                    "the group to end")


def restored_waiter(store, name: str) -> int:
    """Start the waiting group, crash it after a checkpoint, restore it: its PID 1."""
    store.sls("run", "--store", str(store.path), "--name", name, "--hz", "2", "--", "/bin/sh", "-c", WAITER)
    store.checkpoint(name)
    store.crash()
    store.sls("restore", name, "--store", str(store.path))
    group = store.group(name)
    assert group["running"] and group["exit_status"] is None
    return group["pids"][0]


def test_a_restored_group_ends_with_its_commands_exit_status(group_store):
    store = group_store
    restored_waiter(store, "w")
    (store.mnt / "go.tmp").write_text("3\n")
    (store.mnt / "go.tmp").rename(store.mnt / "go")     # whole when it appears
    assert ended(store, "w")["exit_status"] == 3
    assert "exited with status 3" in store.sls("ps", "--store", str(store.path)).stdout


def test_a_restored_group_killed_by_a_signal_says_so(group_store):
    store = group_store
    os.kill(restored_waiter(store, "k"), signal.SIGKILL)
    assert ended(store, "k")["exit_status"] == -signal.SIGKILL
    assert "killed by signal 9" in store.sls("ps", "--store", str(store.path)).stdout


def test_a_group_whose_process_is_killed_says_so(group_store):
    """SIGKILL from outside (the OOM killer, a crash): the group says so, and its output
    holds no complaint of its launcher (util-linux 2.38's `unshare --fork` said
    "sigprocmask unblock failed" and exited 1)."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "f", "--hz", "2", "--", "/bin/sh", "-c",
              "echo started; " + WAITER)
    os.kill(store.group("f")["pids"][0], signal.SIGKILL)
    assert ended(store, "f")["exit_status"] == -signal.SIGKILL
    assert "killed by signal 9" in store.sls("ps", "--store", str(store.path)).stdout
    assert (store.path / "group-f.out").read_text() == "started\n"
