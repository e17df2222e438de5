"""`sls run --init`: PID 1 of the group is sls-init and the command its child, so a program
that daemonizes (its first process returns) keeps running, is checkpointed and comes back
after a crash; the group ends when its last process does, with the command's exit status;
a SIGTERM to the group's PID 1 reaches the application."""
from __future__ import annotations

import os
import signal

import pytest

from group_helpers import wait_for

# forks a worker into the background and returns at once (as `redis-server --daemonize
# yes` or `nginx` do); the worker counts in memory ($i) and in the file `n`, and writes
# to `bad` if the two ever disagree (memory and files restored from different instants)
DAEMONIZING = ('( i=0; echo 0 > n; while :; do read c < n; [ "$c" = "$i" ] || echo "file $c memory $i" >> bad; '
               'i=$((i+1)); echo $i > n.tmp; mv n.tmp n; sleep 0.02; done ) </dev/null >/dev/null 2>&1 & '
               'echo $! > worker; exit 0')


def count(store) -> int:
    try:
        return int((store.mnt / "n").read_text())
    except (OSError, ValueError):
        return -1


def inside_pid(host_pid: int) -> int:
    """The PID `host_pid` has in its own (innermost) PID namespace."""
    with open(f"/proc/{host_pid}/status") as f:
        return int(next(line for line in f if line.startswith("NSpid:")).split()[-1])


@pytest.mark.parametrize("mode", ["--cwd", "--root"])
def test_a_daemonizing_program_keeps_running_and_survives_a_crash(group_store, mode):
    store = group_store
    store.sls("run", mode, "--init", "--store", str(store.path), "--name", "d", "--hz", "5", "--",
              "/bin/sh", "-c", DAEMONIZING)
    wait_for(lambda: count(store) > 20, "the daemonized worker to count")
    group = store.group("d")
    assert group["running"], "the group ended with its first process"
    init = group["pids"][0]
    assert os.readlink(f"/proc/{init}/exe").rsplit("/", 1)[-1].startswith("sls-init-")
    assert inside_pid(init) == 1
    worker = int((store.mnt / "worker").read_text())
    workers = [int(p) for p in open(f"/proc/{init}/task/{init}/children").read().split()]
    assert [inside_pid(p) for p in workers] == [worker], "the worker was not re-parented to sls-init"
    if mode == "--root":
        assert os.readlink(f"/proc/{init}/root") == str(store.mnt)

    store.checkpoint("d")
    floor = count(store)
    store.crash()
    store.sls("restore", "d", "--store", str(store.path))
    wait_for(lambda: count(store) > floor + 20, "the restored worker to count on")
    assert not (store.mnt / "bad").exists(), (store.mnt / "bad").read_text()
    init = store.group("d")["pids"][0]
    assert inside_pid(init) == 1
    assert [inside_pid(int(p)) for p in open(f"/proc/{init}/task/{init}/children").read().split()] == [worker]


def test_the_group_ends_with_its_last_process_and_the_commands_status(group_store):
    store = group_store
    # the command exits 7 at once; a child it left behind lives until the test creates `go`
    store.sls("run", "--init", "--store", str(store.path), "--name", "s", "--hz", "2", "--",
              "/bin/sh", "-c", "(while [ ! -e go ]; do sleep 0.02; done; touch done) & exit 7")
    init = store.group("s")["pids"][0]
    # the command (PID 2, sls-init's child) exits; the child it left (PID 3) is re-parented
    # to sls-init, and the group runs on
    wait_for(lambda: [inside_pid(int(p)) for p in open(f"/proc/{init}/task/{init}/children").read().split()] == [3],
             "the command to exit, leaving its child")
    assert store.group("s")["running"]
    assert store.group("s")["exit_status"] is None
    (store.mnt / "go").touch()
    wait_for(lambda: (store.mnt / "done").exists(), "the left-behind child to finish")
    ended = wait_for(lambda: (g := store.group("s")) and not g["running"] and g["exit_status"] is not None and g,
                     "the group to end")
    assert ended["exit_status"] == 7
    assert "exited with status 7" in store.sls("ps", "--store", str(store.path)).stdout


def test_a_sigterm_to_the_groups_pid_1_reaches_the_application(group_store):
    store = group_store
    # `sleep` has no SIGTERM handler: as PID 1 itself it would ignore the signal
    store.sls("run", "--init", "--store", str(store.path), "--name", "t", "--hz", "2", "--",
              "/bin/sleep", "1000")
    init = store.group("t")["pids"][0]
    wait_for(lambda: open(f"/proc/{init}/task/{init}/children").read().split(), "sleep to start")
    os.kill(init, signal.SIGTERM)
    ended = wait_for(lambda: (g := store.group("t")) and g["exit_status"] is not None and g, "the group to end")
    assert ended["exit_status"] == 128 + signal.SIGTERM
