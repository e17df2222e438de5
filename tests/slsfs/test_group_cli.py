"""The group verbs end to end: sls run, ps, checkpoint --name, barrier, restore --at, stop."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from group_helpers import read_counter, wait_for
from mount.control import request


def counter_value(store, mountpoint=None) -> int | None:
    try:
        text = ((mountpoint or store.mnt) / "counter").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def test_run_ps_checkpoint_barrier_rollback(group_store, group_binaries):
    store = group_store
    out = store.sls("run", "--store", str(store.path), "--name", "app", "--", str(group_binaries / "atomic_counter"),
                    "counter").stdout
    assert "group app" in out and str(store.mnt) in out
    wait_for(lambda: (counter_value(store) or 0) > 5, "the target to count")

    ps = json.loads(store.sls("ps", "--store", str(store.path), "--json").stdout)
    [group] = ps["groups"]
    assert group["running"] and group["hz"] == 10 and group["checkpoints"] >= 1
    human = store.sls("ps", "--store", str(store.path)).stdout
    assert "app" in human and "running" in human

    forgot = store.sls("checkpoint", "app", check=False)   # the group's name without its store
    assert forgot.returncode == 1 and "sls checkpoint app --store STORE" in forgot.stderr, forgot.stderr
    store.sls("checkpoint", "app", "--store", str(store.path), "--name", "early")
    early = wait_for(lambda: counter_value(store), "a counter value")   # >= the value in "early"
    barrier = json.loads(store.sls("barrier", "app", "--store", str(store.path), "--json").stdout)
    assert barrier["durable"] >= barrier["checkpoint"]
    wait_for(lambda: (counter_value(store) or 0) > early + 300, "the target to count well past 'early'")

    store.sls("restore", "app", "--store", str(store.path), "--at", "early")
    rolled = wait_for(lambda: counter_value(store), "the rolled-back counter")
    assert rolled < early + 300, f"restore --at early did not roll back: {rolled} vs {early}"
    wait_for(lambda: (counter_value(store) or 0) > rolled, "the rolled-back target to count on")
    assert not (store.mnt / "counter.bad").exists()
    assert store.group("app")["restored_from"] is not None
    wait_for(lambda: (counter_value(store) or 0) > early + 300, "the target to count well past 'early' again")
    out = store.sls("restore", "early", "--store", str(store.path)).stdout   # `sls restore CHECKPOINT`
    assert "group app: restored from checkpoint" in out, out
    again = wait_for(lambda: counter_value(store), "the counter rolled back again")
    assert again < early + 300, f"sls restore early did not roll back: {again} vs {early}"

    err = store.sls("restore", "nosuch", "--store", str(store.path), check=False)
    assert err.returncode == 1 and "no persistence group 'nosuch'" in err.stderr
    assert store.group("app")["running"], "a refused restore must leave the running group alone"
    other, other_mnt = store.path.with_name("other"), store.path.with_name("other.mnt")
    store.sls("init", str(other))
    other_mnt.mkdir()
    store.sls("mount", str(other), str(other_mnt))
    try:                                       # a mount point where another store is mounted
        err = store.sls("restore", "app", "--store", str(store.path), "--mountpoint", str(other_mnt), check=False)
    finally:
        store.sls("umount", str(other_mnt))
    assert err.returncode == 1 and "is a mount of another store" in err.stderr, err.stderr
    assert store.group("app")["running"], "a restore refused for its mount point stopped the running group"
    store.sls("stop", "--store", str(store.path))
    assert "no daemon" in store.sls("ps", "--store", str(store.path)).stdout


def test_a_stopped_group_does_not_come_back_with_another(group_store):
    """`sls stop GROUP` ends that group: a crash right after it, with no checkpoint since,
    and a restore of another group of the volume (whose newest checkpoint is of the same
    instant as the stopped group's last one) bring back only the other group; the stopped
    one stays restorable by name."""
    store = group_store
    sleeper = [sys.executable, "-c", "import time; time.sleep(3600)"]
    for name in ("kept", "ended"):
        store.sls("run", "--store", str(store.path), "--name", name, "--hz", "0", "--", *sleeper)
    store.checkpoint("kept")                   # one checkpoint of both: the same files commit
    store.sls("stop", "ended", "--store", str(store.path))
    store.crash()
    out = store.sls("restore", "kept", "--store", str(store.path)).stdout
    assert "group kept: restored" in out and "ended" not in out, out
    assert [g["group"] for g in store.ps()["groups"]] == ["kept"]
    out = store.sls("restore", "ended", "--store", str(store.path), "--force").stdout
    assert "group ended: restored" in out, out
    assert store.group("ended")["running"]
    store.sls("stop", "--store", str(store.path))


def test_run_resume_starts_then_resumes(group_store, group_binaries):
    store = group_store
    line = ("run", "--resume", "--store", str(store.path), "--name", "app", "--hz", "0", "--",
            str(group_binaries / "atomic_counter"), "counter")
    assert "running in" in store.sls(*line).stdout           # no checkpoint yet: a fresh start
    floor = wait_for(lambda: (counter_value(store) or 0) > 50 and counter_value(store),
                     "the target to count")
    store.checkpoint("app")                                    # holds a count >= floor
    store.crash()

    out = store.sls(*line).stdout                              # the same line resumes it
    assert "restored from checkpoint" in out, out
    resumed = wait_for(lambda: counter_value(store), "the resumed counter")
    assert resumed >= floor, f"--resume started over: {resumed} after {floor}"
    wait_for(lambda: (counter_value(store) or 0) > resumed + 20, "the resumed target to count on")

    again = store.sls(*line, check=False)
    assert again.returncode == 1 and "already running" in again.stderr
    store.sls("stop", "--store", str(store.path))


def _counter_checkpointed_then_crashed(store, group_binaries) -> int:
    """Group `app` (the atomic counter, checkpointed when asked) counted past 50 and was
    checkpointed, then everything was SIGKILLed; a count its checkpoint holds at least."""
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "0", "--",
              str(group_binaries / "atomic_counter"), "counter")
    floor = wait_for(lambda: (counter_value(store) or 0) > 50 and counter_value(store), "the target to count")
    store.checkpoint("app")
    store.crash()
    return floor


def test_sls_mount_then_restore_takes_the_mount_over(group_store, group_binaries):
    """The issue's crash recovery: `sls mount` (to look at the files), then `sls restore
    GROUP` hands that mount over to the slsfs daemon, once nothing is open in it: the mount
    daemon becomes the group daemon (same process: no new daemon's start). A group or
    checkpoint the store does not hold is refused first: a typo keeps the mount."""
    store = group_store
    floor = _counter_checkpointed_then_crashed(store, group_binaries)

    store.sls("mount", str(store.path), str(store.mnt))     # the crashed daemon's stale mount: replaced
    assert counter_value(store) >= floor, "the plain mount shows the checkpoint's files"
    for typo in (("apq",), ("app", "--at", "nosuch"), ("apq", "--clone")):   # refused before the take-over
        refused = store.sls("restore", *typo, "--store", str(store.path), check=False)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert ("groups: app" in refused.stderr or "#1 (checkpoint" in refused.stderr), refused.stderr
        assert counter_value(store) >= floor, f"sls restore {' '.join(typo)} unmounted the plain mount"
    onlooker = subprocess.Popen(["sleep", "60"], cwd=store.mnt)
    try:
        busy = store.sls("restore", "app", "--store", str(store.path), check=False)
        assert busy.returncode == 1 and "busy" in busy.stderr and f"pid {onlooker.pid}" in busy.stderr, busy.stderr
    finally:
        onlooker.kill()
        onlooker.wait()
    assert counter_value(store) >= floor, "a refused take-over leaves the plain mount serving"

    mount_daemon = request(store.path, "status")["pid"]
    out = store.sls("restore", "app", "--store", str(store.path)).stdout
    assert "restored from checkpoint" in out and str(store.mnt) in out, out
    assert store.ps()["daemon"] == mount_daemon, "the mount daemon did not become the group daemon"
    resumed = wait_for(lambda: counter_value(store), "the restored counter")
    assert resumed >= floor
    wait_for(lambda: (counter_value(store) or 0) > resumed + 20, "the restored target to count on")
    assert store.group("app")["running"]
    store.sls("stop", "--store", str(store.path))


def test_sls_mount_elsewhere_then_restore_takes_that_mount_over(group_store, group_binaries, tmp_path):
    """After a crash the group's own mount is left stale; `sls mount` of the store at
    another directory, then `sls restore GROUP`: that mount is the one taken over (the
    stale one is no mount of the mount daemon's, though of the same store), and the group
    runs on there."""
    store = group_store
    floor = _counter_checkpointed_then_crashed(store, group_binaries)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        store.sls("mount", str(store.path), str(elsewhere))
        mount_daemon = request(store.path, "status")["pid"]
        out = store.sls("restore", "app", "--store", str(store.path)).stdout
        assert f"running in {elsewhere}" in out, out
        assert store.ps()["daemon"] == mount_daemon, "the mount daemon did not become the group daemon"
        resumed = wait_for(lambda: counter_value(store, elsewhere), "the restored counter")
        assert resumed >= floor
        wait_for(lambda: (counter_value(store, elsewhere) or 0) > resumed + 20, "the restored target to count on")
        store.sls("stop", "--store", str(store.path))
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(elsewhere)], capture_output=True)


UNCHECKPOINTABLE_LATER = """
import ctypes, pathlib, time
time.sleep(0.5)                                      # checkpointed at first, then
ctypes.CDLL(None).syscall(425, 4, ctypes.create_string_buffer(120))   # io_uring_setup
pathlib.Path("uring").write_text("made")
time.sleep(600)
"""


def test_barrier_fails_while_the_groups_checkpoints_fail(group_store):
    """`sls barrier` on a group whose state can no longer be checkpointed (here an io_uring
    made after its first checkpoints) exits non-zero with the reason, instead of naming its
    last checkpoint, older than its state, as durable; `sls ps` shows the reason too. A
    group beside it (checkpointed with it while it could be) goes on being checkpointed."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--", sys.executable, "-c", UNCHECKPOINTABLE_LATER)
    store.sls("run", "--store", str(store.path), "--name", "beside", "--", "sleep", "600")
    wait_for(lambda: (store.mnt / "uring").exists(), "the target's io_uring")
    wait_for(lambda: store.group("app")["error"], "a periodic checkpoint to fail")
    taken = store.group("beside")["checkpoints"]
    wait_for(lambda: store.group("beside")["checkpoints"] >= taken + 5, "the group beside to be checkpointed on")
    assert store.sls("barrier", "beside", "--store", str(store.path)).returncode == 0
    barrier = store.sls("barrier", "app", "--store", str(store.path), check=False)
    assert barrier.returncode == 1, barrier.stdout
    assert "group app: its checkpoints fail" in barrier.stderr and "io_uring" in barrier.stderr, barrier.stderr
    assert "io_uring" in store.sls("ps", "--store", str(store.path)).stdout
    assert store.group("app")["running"], "a failing checkpoint must leave the group running"


def test_umount_of_a_group_mount_names_the_groups_and_stops_the_daemon(group_store):
    """`sls umount` of the mount groups run in refuses while they run, naming them and
    `sls stop` (the list of busy files named the daemon itself), and --force stops them;
    once they have stopped it unmounts (it failed with EBUSY: the daemon holds the mount's
    root)."""
    store = group_store
    for name in ("a", "b"):
        store.sls("run", "--store", str(store.path), "--name", name, "--", "sleep", "600")
    refused = store.sls("umount", str(store.mnt), check=False)
    assert refused.returncode == 1 and "persistence groups run in" in refused.stderr, refused.stderr
    assert "(a, b)" in refused.stderr and "sls stop --store" in refused.stderr, refused.stderr
    assert store.group("a")["running"] and store.group("b")["running"]
    store.sls("stop", "b", "--store", str(store.path))
    assert "stopped groups a" in store.sls("umount", "--force", str(store.mnt)).stdout
    assert not os.path.ismount(store.mnt)
    store.sls("run", "--store", str(store.path), "--name", "a", "--", "sleep", "600")   # a new daemon
    store.sls("stop", "a", "--store", str(store.path))                                  # it serves on
    assert store.sls("umount", str(store.mnt)).stdout.strip() == f"unmounted {store.mnt}"
    assert not os.path.ismount(store.mnt) and "no daemon" in store.sls("ps", "--store", str(store.path)).stdout


def test_a_malformed_control_request_gets_a_clear_error_and_the_group_daemon_keeps_serving(group_store):
    """The group daemon answers `<store>/control.sock` like the mount daemon (mount.
    control_server): garbage, a request that is not an object, an op without its fields
    each get a "bad request" reply, not an internal error, and the group runs on."""
    import socket
    from mount.control import CONTROL_VERSION, socket_path
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "0", "--",
              sys.executable, "-c", "import time; time.sleep(3600)")
    no_group = json.dumps({"v": CONTROL_VERSION, "op": "group_checkpoint"}).encode() + b"\n"
    for payload in (b"garbage\n", b'"a string"\n', no_group):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(socket_path(store.path)))
            sock.sendall(payload)
            reply = json.loads(sock.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"].startswith("bad request"), (payload, reply)
    assert store.group("app")["running"]
    store.sls("stop", "--store", str(store.path))


def test_ps_without_a_daemon_lists_the_groups_the_store_can_bring_back(group_store):
    """After a crash (or on the machine a stream was received on) no daemon runs; `sls ps`
    still says which groups the store holds, their newest checkpoint and command, and
    which one the user stopped."""
    store = group_store
    sleeper = [sys.executable, "-c", "import time; time.sleep(3600)"]
    for name in ("ended", "kept"):
        store.sls("run", "--store", str(store.path), "--name", name, "--hz", "0", "--", *sleeper)
    newest = store.checkpoint("kept")
    store.sls("stop", "ended", "--store", str(store.path))
    store.crash()
    listed = json.loads(store.sls("ps", "--store", str(store.path), "--json").stdout)
    by_name = {g["group"]: g for g in listed["stored_groups"]}
    assert set(by_name) == {"ended", "kept"} and by_name["kept"]["argv"] == sleeper
    assert by_name["ended"]["stopped"] and not by_name["kept"]["stopped"]
    shown = store.sls("ps", "--store", str(store.path)).stdout
    kept_line = next(line for line in shown.splitlines() if line.startswith("kept "))
    assert kept_line.split()[1:3] == ["down", str(newest)], shown
    assert "sls restore GROUP --store" in shown


def test_ps_without_a_daemon_says_how_each_group_ended(group_store):
    """A group whose command exited (with its status), one stopped with its daemon, and
    one that was running when everything was killed: `sls ps` tells them apart once no
    daemon runs (exited / stopped / down)."""
    store = group_store
    quits = [sys.executable, "-c", "import sys, time; time.sleep(1); sys.exit(3)", ""]
    store.sls("run", "--store", str(store.path), "--name", "quits", "--hz", "0", "--", *quits)
    wait_for(lambda: not store.group("quits")["running"], "the group's command to exit")
    wait_for(lambda: any(c["label"] == "group quits: exited" for c in request(store.path, "log")["log"]),
             "the daemon to note the end in the store")
    store.sls("stop", "--store", str(store.path))
    shown = store.sls("ps", "--store", str(store.path)).stdout
    assert _state(shown, "quits") == "exited" and "exited with status 3" in shown, shown
    assert shlex.join(quits) in shown, "the command as a shell would take it (quoted, '' kept)"

    sleeper = [sys.executable, "-c", "import time; time.sleep(3600)"]
    store.sls("run", "--store", str(store.path), "--name", "runs", "--hz", "10", "--", *sleeper)
    store.sls("stop", "--store", str(store.path))
    assert _state(store.sls("ps", "--store", str(store.path)).stdout, "runs") == "stopped"
    store.sls("restore", "runs", "--store", str(store.path))
    store.crash()
    shown = store.sls("ps", "--store", str(store.path)).stdout
    assert _state(shown, "runs") == "down", shown


def test_ps_lists_the_groups_that_do_not_run_beside_those_that_do(group_store):
    """With a group daemon running, `sls ps` lists the groups it runs and, as it does with
    no daemon, the others the store holds (here one the user stopped); under `sls mount`
    after a crash (no group runs) it lists them all, and says how to bring one back."""
    store = group_store
    sleeper = [sys.executable, "-c", "import time; time.sleep(3600)"]
    for name in ("ended", "runs"):
        store.sls("run", "--store", str(store.path), "--name", name, "--hz", "0", "--", *sleeper)
    store.sls("stop", "ended", "--store", str(store.path))
    listed = json.loads(store.sls("ps", "--store", str(store.path), "--json").stdout)
    assert [g["group"] for g in listed["groups"]] == ["runs"]
    assert [g["group"] for g in listed["stored_groups"]] == ["ended"] and listed["stored_groups"][0]["stopped"]
    shown = store.sls("ps", "--store", str(store.path)).stdout
    assert _state(shown, "ended") == "stopped" and _state(shown, "runs") == "running", shown

    newest = store.checkpoint("runs")
    store.crash()
    store.sls("mount", "--force", str(store.path), str(store.mnt))
    shown = store.sls("ps", "--store", str(store.path)).stdout
    assert "mounted by `sls mount`" in shown and "sls restore GROUP" in shown, shown
    assert _state(shown, "ended") == "stopped", shown
    runs_line = next(line for line in shown.splitlines() if line.startswith("runs "))
    assert runs_line.split()[1:3] == ["down", str(newest)], shown
    store.sls("umount", str(store.mnt))


def test_ps_counts_every_process_of_a_group(group_store):
    """A group is its command's whole process tree: `sls ps` lists the processes of a
    pipeline, not only the shell it started (`processes`; "PID +N" in the table)."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "pipe", "--hz", "0", "--",
              "/bin/sh", "-c", "sleep 600 | sleep 601")
    entry = wait_for(lambda: len(store.group("pipe")["processes"]) >= 3 and store.group("pipe"), "the pipeline")
    assert entry["pids"][0] in entry["processes"]
    commands = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in entry["processes"]}
    assert {b"sleep\x00600\x00", b"sleep\x00601\x00"} <= commands, commands
    shown = store.sls("ps", "--store", str(store.path)).stdout
    line = next(line for line in shown.splitlines() if line.startswith("pipe "))
    assert f"{entry['pids'][0]} +{len(entry['processes']) - 1}" in line, shown
    store.sls("stop", "--store", str(store.path))


def _state(ps_output: str, group: str) -> str:
    return next(line.split()[1] for line in ps_output.splitlines() if line.startswith(group + " "))


def test_diff_of_two_group_checkpoints_by_their_numbers(group_store):
    """`sls diff app#1 app#2` inside a group's mount compares the files of the two
    checkpoints' instants; an unknown number names the group's checkpoints. With
    --store, from anywhere, asked of the daemon or, with none, read from the store."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "0", "--",
              sys.executable, "-c", "import time; time.sleep(3600)")
    (store.mnt / "kept.txt").write_text("1")
    (store.mnt / "gone.txt").write_text("1")
    store.checkpoint("app")
    (store.mnt / "kept.txt").write_text("22")
    (store.mnt / "gone.txt").unlink()
    (store.mnt / "new.txt").write_text("3")
    store.checkpoint("app")
    seqs = sorted({int(line.split("#")[1].split(":")[0]) for line in
                   store.sls("log", str(store.mnt)).stdout.splitlines() if "group app #" in line})
    first, second = seqs[-2], seqs[-1]
    found = json.loads(subprocess.run(
        [sys.executable, "-m", "slsfs.cli", "diff", f"app#{first}", f"app#{second}", "--json"],
        cwd=store.mnt, capture_output=True, text=True, check=True).stdout)
    assert (found["added"], found["removed"], found["changed"]) == (["new.txt"], ["gone.txt"], ["kept.txt"])
    only_group = json.loads(subprocess.run(
        [sys.executable, "-m", "slsfs.cli", "diff", f"#{first}", f"#{second}", "--json"],
        cwd=store.mnt, capture_output=True, text=True, check=True).stdout)
    assert only_group["added"] == found["added"] and only_group["changed"] == found["changed"]
    unknown = subprocess.run([sys.executable, "-m", "slsfs.cli", "diff", "app#999", f"app#{second}"],
                             cwd=store.mnt, capture_output=True, text=True)
    assert unknown.returncode == 1 and "app#999" in unknown.stderr, unknown.stderr
    by_store = json.loads(store.sls("diff", f"app#{first}", f"app#{second}", "--store", str(store.path),
                                    "--json").stdout)           # from anywhere, as the group verbs
    assert by_store == found
    store.sls("stop", "--store", str(store.path))
    offline = json.loads(store.sls("diff", f"app#{first}", f"app#{second}", "--store", str(store.path),
                                   "--json").stdout)            # no daemon: read from the store
    assert offline == found
    unknown = store.sls("diff", "app#999", f"app#{second}", "--store", str(store.path), check=False)
    assert unknown.returncode == 1 and "app#999" in unknown.stderr, unknown.stderr


def test_sls_run_takes_the_mount_of_sls_mount_over_in_the_same_process(group_store):
    """`sls mount`, then `sls run`: the mount's daemon becomes the group daemon (the group
    runs in that mount point, on the same volume), and a group name the store holds no
    checkpoint of is no refusal (`--resume` of a new group starts it)."""
    store = group_store
    store.mnt.mkdir()
    store.sls("mount", str(store.path), str(store.mnt))
    (store.mnt / "before").write_text("written through sls mount")
    mount_daemon = request(store.path, "status")["pid"]
    out = store.sls("run", "--resume", "--store", str(store.path), "--name", "fresh", "--hz", "0", "--",
                    sys.executable, "-c", "import time; open('ran', 'w').close(); time.sleep(600)").stdout
    assert f"running in {store.mnt}" in out, out
    assert store.ps()["daemon"] == mount_daemon, "the mount daemon did not become the group daemon"
    wait_for(lambda: (store.mnt / "ran").exists(), "the group to run in the mount")
    assert (store.mnt / "before").read_text() == "written through sls mount"
    store.sls("stop", "--store", str(store.path))


def test_a_mount_in_the_foreground_is_taken_over_by_a_new_daemon(group_store, group_binaries):
    """`sls mount --foreground` runs in the user's terminal: its daemon does not become the
    group daemon (it answers no hand_over); `sls restore` unmounts it, once a typo has been
    refused with the mount kept, and starts a daemon."""
    store = group_store
    floor = _counter_checkpointed_then_crashed(store, group_binaries)
    foreground = subprocess.Popen([sys.executable, "-m", "slsfs.cli", "mount", "--force", "--foreground",
                                   str(store.path), str(store.mnt)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (counter_value(store) or 0) >= floor, "the foreground mount to serve")
        refused = store.sls("restore", "apq", "--store", str(store.path), check=False)
        assert refused.returncode == 1 and "groups: app" in refused.stderr, refused.stderr
        assert (counter_value(store) or 0) >= floor, "a refused restore unmounted the foreground mount"
        out = store.sls("restore", "app", "--store", str(store.path)).stdout
        assert "restored from checkpoint" in out, out
        assert foreground.wait(timeout=60) == 0
        assert store.ps()["daemon"] != foreground.pid
        wait_for(lambda: (counter_value(store) or 0) > floor + 20, "the restored target to count on")
    finally:
        if foreground.poll() is None:
            foreground.kill()
            foreground.wait()
    store.sls("stop", "--store", str(store.path))


def test_restore_by_number_after_stop_and_of_a_checkpoint_that_is_gone(group_store):
    """`sls stop` notes the end in the group's record under the last checkpoint's number:
    `--at NAME#N` still names that one checkpoint (it was refused as ambiguous, "a restore
    went back before it"). `sls restore ID` of a checkpoint that is not (or no longer) in
    the store says so, not only that no group has that name."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "0", "--",
              sys.executable, "-c", "import time; time.sleep(3600)")
    store.checkpoint("app")
    store.sls("stop", "--store", str(store.path))
    log = store.sls("log", str(store.path)).stdout
    assert "group app: daemon stopped" in log, log
    last = max(int(word[1:-1]) for word in log.split() if word.startswith("#") and word.endswith(":"))
    restored = store.sls("restore", "app", "--store", str(store.path), "--at", f"app#{last}")
    assert "restored from checkpoint" in restored.stdout
    store.sls("stop", "--store", str(store.path))
    gone = store.sls("restore", "99999", "--store", str(store.path), check=False)
    assert gone.returncode == 1 and "checkpoint 99999 does not exist" in gone.stderr, gone.stderr


def test_run_with_a_bad_group_name_starts_nothing(group_store, tmp_path):
    """A name a group cannot have (given, or made from the command's name) is refused
    before a daemon starts: nothing is mounted, no daemon is left serving the store."""
    store = group_store
    tool = tmp_path / "_tool"
    tool.write_text("#!/bin/sh\nsleep 3600\n")
    tool.chmod(0o755)
    for name_args in (["--name", "a/b"], ["--name", "x\n"], ["--name", "y" * 300], []):
        refused = store.sls("run", "--store", str(store.path), *name_args, "--hz", "0", "--", str(tool),
                            check=False)
        assert refused.returncode == 1 and "bad group name" in refused.stderr, (name_args, refused.stderr)
        assert not os.path.ismount(store.mnt), name_args
        assert "no daemon runs" in store.sls("ps", "--store", str(store.path)).stdout
    assert "--name" in refused.stderr           # made from the command's name: says how to give one


def test_run_of_a_command_that_cannot_be_run_says_why_in_one_line(group_store, tmp_path):
    store = group_store
    not_executable = tmp_path / "data"
    not_executable.write_text("not a program\n")
    for command, why, status in (("/nonexistent/cmd", "No such file or directory", 127),
                                 ("no-such-command-anywhere", "No such file or directory", 127),
                                 (str(not_executable), "Permission denied", 126)):
        refused = store.sls("run", "--store", str(store.path), "--hz", "0", "--", command, check=False)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"could not run {command}: {why} (exit status {status};" in refused.stderr, refused.stderr
        assert "no daemon runs" in store.sls("ps", "--store", str(store.path)).stdout   # nothing left behind
        assert not os.path.ismount(store.mnt)
    store.sls("run", "--store", str(store.path), "--name", "sleeper", "--hz", "0", "--", "sleep", "300")
    refused = store.sls("run", "--store", str(store.path), "--hz", "0", "--", "/nonexistent/cmd", check=False)
    assert refused.returncode == 1 and "could not run" in refused.stderr
    shown = store.sls("ps", "--store", str(store.path)).stdout      # the daemon it found runs on
    assert "sleeper" in shown and "running" in shown, shown
    store.sls("stop", "--store", str(store.path))


def test_a_group_started_with_a_path_into_the_mount_finds_its_programs_there(group_store, group_binaries):
    """A second group started while the first writes in the mount, from a shell whose PATH
    has a directory of that mount first (an application's bin/): it starts, and its command
    is found there. The daemon's own programs are not looked up along that PATH: with
    Debian's python3 (3.11.2) a Popen child that touched the mount before its exec (a
    lookup, or a chdir into it) waited for the daemon, which could not answer until that
    exec: the daemon hung and this `sls run` failed after minutes."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "first", "--hz", "50", "--",
              str(group_binaries / "atomic_counter"), "counter-first")
    wait_for(lambda: (read_counter(store.mnt / "counter-first") or 0) > 5, "the first group to count")
    bin_dir = store.mnt / "bin"
    bin_dir.mkdir()
    program = bin_dir / "count-second"
    program.write_text(f"#!/bin/sh\nexec {shlex.quote(str(group_binaries / 'atomic_counter'))} counter-second\n")
    program.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    started = subprocess.run([sys.executable, "-m", "slsfs.cli", "run", "--store", str(store.path), "--name", "second",
                              "--", "count-second"], env=env, capture_output=True, text=True, timeout=90)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: (read_counter(store.mnt / "counter-second") or 0) > 5, "the second group to count")
    assert {g["group"] for g in store.ps()["groups"] if g["running"]} == {"first", "second"}
