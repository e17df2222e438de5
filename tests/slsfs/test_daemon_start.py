"""`sls restore` and `sls run` fork their daemon to be as they start (slsfs.daemon_start):
a fork the command does not use (it failed, or a daemon already serves the store) is gone
when the command returns, and the one it uses serves."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from group_helpers import autogroup_nice, wait_for
from slsfs.daemon_priority import AUTOGROUP_NICE


def _store_processes(store) -> set[int]:
    """Processes running `sls ... --store STORE` (python -m slsfs.cli): the daemon (a fork
    of the command that started it keeps its command line) and any fork left behind."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "slsfs.cli" in argv and str(store.path) in argv and int(pid) != os.getpid():
            found.add(int(pid))
    return found


def test_a_failed_restore_leaves_no_fork_behind(group_store):
    failed = group_store.sls("restore", "nosuch", "--store", str(group_store.path), check=False)
    assert failed.returncode == 1 and "nosuch" in failed.stderr, failed.stderr
    assert _store_processes(group_store) == set()


def test_a_run_beside_a_daemon_leaves_only_that_daemon(group_store):
    store = group_store
    loop = ["--", sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
    store.sls("run", "--store", str(store.path), "--name", "one", *loop)
    daemon = store.ps()["daemon"]
    store.sls("run", "--store", str(store.path), "--name", "two", *loop)   # served by the running daemon
    assert store.ps()["daemon"] == daemon
    assert _store_processes(store) == {daemon}
    store.crash()
    out = store.sls("restore", "one", "--store", str(store.path)).stdout   # the fork it used serves
    assert "group one: restored" in out, out
    restored = store.ps()
    assert restored["daemon"] != daemon
    assert all(g["running"] for g in restored["groups"])
    startup = restored["startup_ms"]     # where its start went (bench/groups.py reports it)
    started = ["imports", "command_wait", "store_open", "plan_restore", "detach_stale", "reset_volume", "mount",
               "restore", "control_socket"]
    assert list(startup) in (started, [*started, "checkpoint_imports"]), startup   # (the latter: after it served)
    assert all(ms >= 0 for ms in startup.values()), startup
    wait_for(lambda: _store_processes(store) == {restored["daemon"]}, "only the new daemon to be left")


def test_a_restore_after_a_crash_leaves_the_checks_to_its_daemon(group_store):
    """With no daemon running, `sls restore` leaves what to restore to the daemon it starts
    (which opens the store anyway), also from a checkpoint's name (`sls restore
    CHECKPOINT`); a name it does not find is the command's own error, nothing left behind."""
    store = group_store
    loop = ["--", sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
    store.sls("run", "--store", str(store.path), "--name", "one", "--hz", "0", *loop)
    store.sls("checkpoint", "one", "--store", str(store.path), "--name", "marked")
    store.crash()
    out = store.sls("restore", "marked", "--store", str(store.path)).stdout
    assert "group one: restored from checkpoint" in out, out
    assert store.group("one")["running"]
    store.crash()
    refused = store.sls("restore", "nosuch", "--store", str(store.path), check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("sls: no persistence group 'nosuch'"), refused
    assert "did not start" not in refused.stderr, refused.stderr
    assert _store_processes(store) == set()
    assert "no daemon" in store.sls("ps", "--store", str(store.path)).stdout
    assert "group one: restored" in store.sls("restore", "one", "--store", str(store.path)).stdout
    store.sls("stop", "--store", str(store.path))


PROBED_SLS = """
import os, sys
from objectstore import store
from slsfs import groups
command, log = os.getpid(), os.environ["SLS_PROBE_LOG"]

def probe(what, original):
    def probed(*args, **kwargs):
        if os.getpid() == command:          # (not in the daemon it forks)
            with open(log, "a") as f:
                f.write(what + "\\n")
        return original(*args, **kwargs)
    return probed

store.Store.__init__ = probe("open", store.Store.__init__)
groups.resolve = probe("resolve", groups.resolve)
groups.group_at_checkpoint = probe("resolve", groups.group_at_checkpoint)
from slsfs.cli import main
sys.argv[0] = "sls"
sys.exit(main())
"""


def test_a_resume_and_a_roll_back_leave_the_store_to_the_daemon(group_store, tmp_path):
    """`sls run --resume` with no daemon running opens no store in the command (the daemon
    it starts restores the group if the store has it, else serves the volume for a fresh
    start), `sls restore CHECKPOINT [--clone]` with the group's daemon running resolves the
    name through that daemon, and with none running leaves it to the daemon it starts, as
    `sls restore GROUP` leaves it whether GROUP is a group or a process image: the store is
    opened and read by a daemon only."""
    store, probes = group_store, tmp_path / "probes"

    def probed_sls(*args: str) -> tuple[str, list[str]]:
        probes.unlink(missing_ok=True)
        result = subprocess.run([sys.executable, "-c", PROBED_SLS, *args], capture_output=True, text=True,
                                env={**os.environ, "SLS_PROBE_LOG": str(probes)}, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout, probes.read_text().split() if probes.exists() else []

    line = ("run", "--resume", "--store", str(store.path), "--name", "one", "--hz", "0", "--",
            sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)")
    out, probed = probed_sls(*line)
    assert "group one: pid" in out and probed == [], (out, probed)       # no checkpoint yet: started
    store.sls("checkpoint", "one", "--store", str(store.path), "--name", "marked")
    store.crash()
    out, probed = probed_sls(*line)
    assert "group one: restored from checkpoint" in out and probed == [], (out, probed)
    out, probed = probed_sls("restore", "marked", "--store", str(store.path))   # a roll back
    assert "group one: restored from checkpoint" in out and "resolve" not in probed, (out, probed)
    assert store.group("one")["running"]
    out, probed = probed_sls("restore", "marked", "--store", str(store.path), "--clone")
    assert "one.clone1: pid" in out and probed == [], (out, probed)
    store.crash()
    out, probed = probed_sls("restore", "one", "--store", str(store.path))   # a group, not an image
    assert "group one: restored from checkpoint" in out and probed == [], (out, probed)
    store.crash()
    out, probed = probed_sls("restore", "marked", "--store", str(store.path), "--clone")   # no daemon runs
    assert "one.clone" in out and probed == [], (out, probed)
    store.sls("stop", "--store", str(store.path))


MODULES_AT_READY = """
import os, sys
from slsfs import daemon_ready
command, log = os.getpid(), os.environ["SLS_PROBE_LOG"]
original = daemon_ready.ready_line

def probed(status):
    if os.getpid() != command:          # the daemon, forked by the command: what it has imported
        with open(log, "w") as f:       # as it says that the restored group runs
            f.write("\\n".join(sorted(sys.modules)))
    return original(status)

daemon_ready.ready_line = probed
from slsfs.cli import main
sys.argv[0] = "sls"
sys.exit(main())
"""


def test_a_restoring_daemon_imports_the_capture_side_once_the_group_runs(group_store, tmp_path):
    """A daemon restoring a group after a crash has not imported what only checkpoints
    need (the capture side: ~9% of its imports, on the restore's path) when it says the
    group runs; it imports it then, and the group's checkpoints work as before."""
    store, modules = group_store, tmp_path / "modules"
    loop = ["--", sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
    store.sls("run", "--store", str(store.path), "--name", "one", "--hz", "0", *loop)
    store.crash()
    restored = subprocess.run([sys.executable, "-c", MODULES_AT_READY, "restore", "one", "--store", str(store.path)],
                              capture_output=True, text=True, env={**os.environ, "SLS_PROBE_LOG": str(modules)},
                              timeout=300)
    assert restored.returncode == 0 and "group one: restored" in restored.stdout, restored
    imported = set(modules.read_text().split())
    assert "checkpointer.restore" in imported and "slsfs.daemon" in imported, sorted(imported)
    assert not {"checkpointer.capture", "checkpointer.incremental", "slsfs.group_checkpoint", "slsfs.procs_view",
                "slsfs.group_retention"} & imported, sorted(imported)
    checkpointed = store.sls("checkpoint", "one", "--store", str(store.path)).stdout
    assert "group one: checkpoint" in checkpointed, checkpointed
    assert "checkpoint_imports" in store.ps()["startup_ms"]
    store.sls("stop", "--store", str(store.path))


IMPORTED_AT_FORK = """
import os, sys
before, fork = set(sys.modules), os.fork

def probed_fork():
    with open(os.environ["SLS_PROBE_LOG"], "w") as f:
        f.write("\\n".join(sorted(set(sys.modules) - before)))
    return fork()

os.fork = probed_fork
from slsfs.cli import main
sys.argv[0] = "sls"
sys.exit(main())
"""


def test_a_restore_forks_its_daemon_before_it_imports_what_the_fork_can(tmp_path):
    """`sls restore` forks its daemon to be before it imports anything the fork can import
    itself (typing, json, threading, argparse, logging, the store, the control socket):
    the command's start up to the fork runs at its session's share, on the restore's path
    (0.28 s at load 11), the fork at the daemon's raised share."""
    probe = tmp_path / "imported"
    subprocess.run([sys.executable, "-c", IMPORTED_AT_FORK, "restore", "g", "--store", str(tmp_path / "nostore")],
                   capture_output=True, text=True, env={**os.environ, "SLS_PROBE_LOG": str(probe)}, timeout=60)
    imported = set(probe.read_text().split())
    assert "slsfs.daemon_start" in imported, sorted(imported)
    assert not {"typing", "json", "threading", "argparse", "logging", "subprocess", "objectstore",
                "mount.control"} & imported, sorted(imported)


def test_a_restore_that_the_running_daemon_does_forks_no_daemon(group_store, tmp_path):
    """With a group daemon serving the store, `sls restore` is done by it (in place): the
    command forks no daemon to be, whose imports would take the other CPU from the
    restore; the control socket's name it probes is mount.control's."""
    from mount.control import SOCKET_NAME
    from slsfs.daemon_start import CONTROL_SOCKET_NAME
    assert CONTROL_SOCKET_NAME == SOCKET_NAME
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "g", "--hz", "0", "--",
              sys.executable, "-c", "import time; time.sleep(600)")
    store.checkpoint("g")
    probe = tmp_path / "imported"
    restored = subprocess.run([sys.executable, "-c", IMPORTED_AT_FORK, "restore", "g", "--store", str(store.path),
                               "--at", "latest"],
                              capture_output=True, text=True, env={**os.environ, "SLS_PROBE_LOG": str(probe)},
                              timeout=60)
    assert restored.returncode == 0 and "group g: restored" in restored.stdout, restored
    assert not probe.exists(), "the command forked a daemon to be"
    store.sls("stop", "--store", str(store.path))


FORKS_COUNTED = """
import os, sys
fork, command = os.fork, os.getpid()

def counted_fork():
    if os.getpid() == command:
        with open(os.environ["SLS_PROBE_LOG"], "a") as f:
            f.write("fork\\n")
    return fork()

os.fork = counted_fork
from slsfs.cli import main
sys.argv[0] = "sls"
sys.exit(main())
"""


def test_a_restore_after_a_crash_starts_the_daemon_it_forked_first(group_store, tmp_path):
    """After a crash (no daemon answers) `sls restore` forks its daemon to be first thing
    and starts that one: its imports overlap the command's own work. A second fork would
    import all again (~170 ms at load 4), after the command's work."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "g", "--hz", "0", "--",
              sys.executable, "-c", "import time; time.sleep(600)")
    store.checkpoint("g")
    store.crash()
    probe = tmp_path / "forks"
    restored = subprocess.run([sys.executable, "-c", FORKS_COUNTED, "restore", "g", "--store", str(store.path)],
                              capture_output=True, text=True, env={**os.environ, "SLS_PROBE_LOG": str(probe)},
                              timeout=60)
    assert restored.returncode == 0 and "group g: restored" in restored.stdout, restored
    assert probe.read_text().count("fork") == 1, "the command forked a second daemon to be"
    store.sls("stop", "--store", str(store.path))


def test_a_restoring_daemon_goes_on_once_its_command_has_exited():
    """What a restoring daemon does once it answered (imports, its syncfs helper's start)
    waits until the command that waits for that answer has exited (until_exited): at the
    daemon's raised share it held the CPUs that the command's last steps needed."""
    import trio
    from slsfs.daemon import until_exited
    command = subprocess.Popen(["sleep", "600"])
    try:
        async def wait_then_end() -> bool:
            async with trio.open_nursery() as nursery:
                done = trio.Event()

                async def waiter() -> None:
                    await until_exited(command.pid, 600)
                    done.set()
                nursery.start_soon(waiter)
                await trio.sleep(0.2)
                waited = not done.is_set()
                command.kill()
                await done.wait()
            return waited
        assert trio.run(wait_then_end), "it went on while the command ran"
    finally:
        command.kill()
        command.wait()


FORK_AND_WAIT = """
import sys
from slsfs import daemon_start
early = daemon_start.DaemonStart()       # forked now: it imports the daemon, then waits for its store
print(early.pid, flush=True)
sys.stdin.read()                         # until the test has looked
daemon_start.end_unstarted()             # killed and reaped, as by a command that did not start it
"""


def test_the_daemon_to_be_imports_at_the_daemons_raised_share():
    """The fork that `sls restore` and `sls run` make first (slsfs.daemon_start) raises its
    session's share (slsfs.daemon_priority) before it imports the daemon, not once started:
    on a busy machine its ~150 ms of imports waited 0.5-1.5 s for a CPU at one session's
    share, the longest wait of a restore after a crash."""
    command = subprocess.Popen([sys.executable, "-c", FORK_AND_WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    try:
        fork = int(command.stdout.readline())
        wait_for(lambda: autogroup_nice(fork) == AUTOGROUP_NICE,
                 "the fork's session to get the daemon's share", timeout=10)
        assert os.getsid(fork) == fork
    finally:
        command.communicate("", timeout=60)
    assert command.returncode == 0


def test_a_daemon_refusing_its_mount_point_leaves_the_volume_as_it_was(group_store):
    """A daemon started directly (`python -m slsfs.daemon STORE --restore GROUP`, as a
    supervisor may) at another store's mount point refuses it before it resets the
    volume to the group's checkpoint: files written since that checkpoint stay."""
    store = group_store
    sleeper = ["--", sys.executable, "-c", "import time; time.sleep(3600)"]
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "0", *sleeper)
    store.checkpoint("app")
    (store.mnt / "written-after").write_text("kept")
    store.sls("stop", "--store", str(store.path))
    other, other_mnt = store.path.with_name("other"), store.path.with_name("other.mnt")
    store.sls("init", str(other))
    other_mnt.mkdir()
    store.sls("mount", str(other), str(other_mnt))
    try:
        daemon = subprocess.run([sys.executable, "-m", "slsfs.daemon", str(store.path), "--restore", "app",
                                 "--mountpoint", str(other_mnt)], capture_output=True, text=True, timeout=120)
    finally:
        store.sls("umount", str(other_mnt))
    assert daemon.returncode == 1, daemon
    assert "is a mount of another store" in (store.path / "daemon.log").read_text()
    store.sls("mount", str(store.path), str(store.mnt))
    try:
        assert (store.mnt / "written-after").read_text() == "kept", "the refused restore reset the volume"
    finally:
        store.sls("umount", str(store.mnt))
