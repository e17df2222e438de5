"""Groups that stress the freeze: a shell forking short-lived commands without pause.

Freezing a process tree can meet a child at the instant it exits (PTRACE_SEIZE of an
exiting task answers EPERM; a child seen running is a zombie by the time it is
attached, or its /proc entries vanish while it is read). Measured here: a third of
this shell's checkpoints fail that way at the first try. The daemon retries the
checkpoints it is asked for, so a group's first checkpoint and `sls checkpoint` succeed
however busy the tree is. A restore that fails leaves nothing mounted or running;
checkpoints that keep failing are shown by `sls ps`; a group that outlived its daemon is
replaced by the restore."""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from group_helpers import wait_for

FORKING_SHELL = "while :; do /bin/true; done"
CHECKPOINTS = 10


def test_fork_heavy_group_starts_and_checkpoints_every_time(group_store):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "forky", "--hz", "2", "--",
              "/bin/sh", "-c", FORKING_SHELL)
    ids = [store.checkpoint("forky") for _ in range(CHECKPOINTS)]
    assert ids == sorted(set(ids)), f"checkpoint ids are not increasing: {ids}"
    group = store.group("forky")
    assert group["running"] and group["checkpoints"] >= CHECKPOINTS + 1
    store.sls("stop", "--store", str(store.path))
    wait_for(lambda: not store.mnt.is_mount(), "the mount to go away")


def test_a_restore_that_fails_says_why_and_leaves_nothing_mounted(group_store):
    """The restore fails once the daemon serves the mount (here: another process took the
    group's port meanwhile): a one-line reason, no daemon, no mount left behind; once the
    port is free again the same restore works."""
    store = group_store
    port = store.run_tcp_server("web")
    store.sls("checkpoint", "web", "--store", str(store.path))
    store.sls("stop", "--store", str(store.path))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        failed = store.sls("restore", "web", "--store", str(store.path), check=False)
        assert failed.returncode == 1 and "Address already in use" in failed.stderr, failed
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        assert "restore failed" in (store.path / "daemon.log").read_text()
        assert not store.mnt.is_mount() and str(store.mnt) not in Path("/proc/mounts").read_text()
        assert "no daemon" in store.sls("ps", "--store", str(store.path)).stdout
    store.sls("restore", "web", "--store", str(store.path))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        assert conn.makefile().readline().split()[1].isdigit()
    store.sls("stop", "--store", str(store.path))


def test_a_group_that_outlived_its_daemon_is_replaced_by_the_restore(group_store):
    """Only the daemon is SIGKILLed: the server runs on against a dead mount, holding its
    port. `sls restore` stops that orphaned instance (its mount is dead, its state cannot
    be checkpointed any more) and brings the group back from its newest checkpoint."""
    store = group_store
    port = store.run_tcp_server("web")
    store.sls("checkpoint", "web", "--store", str(store.path))
    status = store.ps()
    orphan = status["groups"][0]["pids"][0]
    os.kill(status["daemon"], signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{status['daemon']}").exists(), "the daemon to die")
    assert Path(f"/proc/{orphan}").exists(), "the group died with its daemon: nothing to test"
    store.sls("restore", "web", "--store", str(store.path))
    assert not Path(f"/proc/{orphan}").exists() or state_of(orphan) == "Z", "the orphaned instance runs on"
    assert store.group("web")["pids"] != [orphan]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        assert conn.makefile().readline().split()[1].isdigit()
    store.sls("stop", "--store", str(store.path))


def test_sls_stop_without_a_daemon_stops_what_outlived_it(group_store):
    """Only the daemon is SIGKILLed: `sls stop` finds no daemon, but the group's processes
    run on against the dead mount. It stops them and detaches the mount."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "s", "--", "/bin/sleep", "600")
    status = store.ps()
    orphan = status["groups"][0]["pids"][0]
    os.kill(status["daemon"], signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{status['daemon']}").exists(), "the daemon to die")
    assert Path(f"/proc/{orphan}").exists(), "the group died with its daemon: nothing to test"
    stopped = store.sls("stop", "--store", str(store.path)).stdout
    assert f"stopped the processes its groups left running there: {orphan}" in stopped, stopped
    assert not Path(f"/proc/{orphan}").exists() or state_of(orphan) == "Z", "the orphaned instance runs on"
    with open("/proc/mounts") as f:
        assert str(store.mnt) not in [line.split()[1] for line in f], "the dead mount was left"
    assert "no daemon runs" in store.sls("stop", "--store", str(store.path)).stdout


def state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_failing_checkpoints_are_shown_by_sls_ps(group_store):
    """A group that opens something no checkpoint can hold (a kernel log reader) keeps
    running, its checkpoints fail and are retried: `sls ps` says so and why, and that the
    newest durable checkpoint stays the one before."""
    store = group_store
    script = "while [ ! -e go ]; do sleep 0.05; done; exec 3</dev/kmsg; sleep 1000"
    store.sls("run", "--store", str(store.path), "--name", "kmsg", "--hz", "5", "--", "/bin/sh", "-c", script)
    (store.mnt / "go").touch()
    human = wait_for(lambda: (out := store.sls("ps", "--store", str(store.path)).stdout)
                     and "! its checkpoints fail" in out and out,      # (the script itself holds a "!")
                     "sls ps to show the failing checkpoints")
    group = store.group("kmsg")      # no checkpoint succeeds any more: its newest durable is fixed
    assert "/dev/kmsg" in human and f"checkpoint {group['last_durable']} stays its newest" in human, human
    assert group["running"] and "/dev/kmsg" in group["error"]
    store.sls("stop", "--store", str(store.path))


def test_a_program_that_daemonizes_is_told_to_run_in_the_foreground(group_store):
    """A group ends with its first process (PID 1 of its namespace): a program that forks
    into the background and returns takes its group with it. `sls ps` says how it ended
    and what to do."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "bg", "--", "/bin/sh", "-c",
              "while [ ! -e go ]; do sleep 0.05; done; sleep 600 & exit 0")
    (store.mnt / "go").touch()
    # (ended as soon as its PID 1 is a zombie; the status comes once the launcher has reaped it)
    group = wait_for(lambda: (g := store.group("bg")) and not g["running"] and g["exit_status"] is not None and g,
                     "the group to end and its exit status")
    assert group["exit_status"] == 0
    human = store.sls("ps", "--store", str(store.path)).stdout
    assert "exited with status 0" in human and "sls run --init" in human, human
    store.sls("stop", "--store", str(store.path))


def test_a_program_that_ran_a_while_and_exited_is_not_told_it_daemonized(group_store):
    from slsfs.group_commands import DAEMONIZED_WITHIN_S
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "job", "--", "sleep", str(DAEMONIZED_WITHIN_S + 0.5))
    group = wait_for(lambda: (g := store.group("job")) and not g["running"] and g["exit_status"] is not None and g,
                     "the group to end and its exit status", timeout=60)
    assert group["exit_status"] == 0 and group["ran_s"] >= DAEMONIZED_WITHIN_S
    human = store.sls("ps", "--store", str(store.path)).stdout
    assert "exited with status 0" in human and "sls run --init" not in human, human
    store.sls("stop", "--store", str(store.path))
