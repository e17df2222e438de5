"""Less common process attributes come back as they were (targets/attributes.c checks
them itself, before the checkpoint and after the restore): cases found by running CRIU's
zdtm tests against the checkpointer."""
from __future__ import annotations

import os
import signal
import sys

import pytest

import checkpointer
from checkpointer import CheckpointError, Unsupported
from ckpt_helpers import children_of, ok_lines, restored_goes_on, wait_for


def checks(out, pid: int, rounds: int) -> list[str]:
    """Ask the target to check itself (its `rounds`-th time); the lines of that round."""
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: out.read_text().count("done\n") >= rounds, f"check round {rounds}")
    return out.read_text().split("done\n")[rounds - 1].split("\n")


def test_attributes_survive_checkpoint_kill_restore(procs, store, binaries, tmp_path, subreaper):
    out = tmp_path / "attributes.out"
    proc = procs.start([str(binaries / "attributes"), str(out)])
    children = []
    try:
        wait_for(lambda: out.exists() and "ready" in out.read_text(), "the target to set up")
        children = children_of(proc.pid)      # some in sessions and groups of their own
        before = checks(out, proc.pid, 1)
        assert not [line for line in before if line.startswith("BAD")], f"the target is wrong already: {before}"
        checkpointer.checkpoint([proc.pid], store, "attributes", tree=True)
    finally:
        procs.kill(proc)
        for child in children:
            os.kill(child, signal.SIGKILL)
        subreaper(children)
    restored = checkpointer.restore(store, "attributes")
    procs.restored.append(restored)
    after = checks(out, restored.pids[0], 2)
    assert not [line for line in after if line.startswith("BAD")], after
    assert [line for line in after if line.startswith("ok")] == [line for line in before if line.startswith("ok")]


IO_URING_TARGET = """
import ctypes, mmap, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
ring = libc.syscall(425, 4, ctypes.create_string_buffer(120))  # io_uring_setup
if ring < 0:
    sys.exit(3)
if sys.argv[2] == "mapping-only":     # its submission ring mapped (as liburing does), the fd closed
    rings = mmap.mmap(ring, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    os.close(ring)
open(sys.argv[1], "w").write("ready")
time.sleep(600)
"""


@pytest.mark.parametrize("held_by", ["fd", "mapping-only"])
def test_io_uring_is_refused_by_name(procs, store, tmp_path, held_by):
    """A process with an io_uring (MariaDB 10.6+ by default) cannot be checkpointed: the
    error names it and says how to turn it off (it used to say "special files"), whether
    the process holds its fd or only its rings' mapping (it said "a mapping of
    anon_inode:[io_uring]"). Native AIO (io_setup) is kept: test_ckpt_aio.py."""
    out = tmp_path / "io_uring.out"
    proc = procs.start([sys.executable, "-c", IO_URING_TARGET, str(out), held_by])
    wait_for(lambda: out.exists() and out.read_text() == "ready", "the target's io_uring setup")
    held = rf"fd \d+ of process {proc.pid} \(anon_inode:\[io_uring\]\)" if held_by == "fd" else rf"process {proc.pid}"
    with pytest.raises(Unsupported, match=rf"{held}: an io_uring instance.*innodb_use_native_aio=0"):
        checkpointer.checkpoint([proc.pid], store, "io_uring", tree=True)
    assert proc.poll() is None, "the refused checkpoint must leave the process running"


@pytest.mark.parametrize("as_child", [False, True], ids=["itself", "a-child"])
def test_a_process_whose_main_thread_has_exited_is_refused_by_name(procs, store, binaries, tmp_path, as_child):
    """pthread_exit in main with other threads running: a clear error, where it was "a
    zombie" (checkpointed itself) or silently recorded as one (in a tree), its running
    threads lost."""
    out = tmp_path / "leader.out"
    command = [str(binaries / "leader_exited"), str(out)]
    proc = procs.start(["/bin/sh", "-c", '"$@" & wait', "sh", *command] if as_child else command)
    wait_for(lambda: out.exists() and out.read_text() == "ready", "the target's main thread to exit")
    exited = children_of(proc.pid)[0] if as_child else proc.pid
    try:
        with pytest.raises(Unsupported, match=f"process {exited}: its main thread has exited"):
            checkpointer.checkpoint([proc.pid], store, "leader", tree=True)
        assert proc.poll() is None, "the refused checkpoint must leave the process running"
    finally:
        if as_child:
            os.kill(exited, signal.SIGKILL)


@pytest.mark.parametrize("in_thread", [False, True], ids=["main thread", "second thread"])
def test_a_parent_inside_vfork_is_refused_not_waited_for(procs, store, binaries, tmp_path, in_thread):
    """A vfork() parent cannot stop until its child execs or exits: the checkpoint says so
    (it waited forever for a child that never execs) and leaves both running, every thread
    let go, whichever thread called vfork()."""
    out = tmp_path / "vfork.out"
    proc = procs.start([str(binaries / "vfork_waiting"), str(out)] + (["thread"] if in_thread else []))
    wait_for(lambda: out.exists() and out.read_text() == "ready", "the vfork child to start")
    child = children_of(proc.pid)[0]
    try:
        with pytest.raises(CheckpointError, match="is inside vfork"):
            checkpointer.checkpoint([proc.pid], store, "vfork", tree=True)
        assert proc.poll() is None
    finally:
        os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=30) == 0, "the parent goes on once its child has gone"


PROC_HOLDER = """
import os, sys, time
held = os.open("/proc/self/comm", os.O_RDONLY)      # the kernel names it /proc/<pid>/comm
os.read(held, 3)
outside = os.open("/proc/1/status", os.O_RDONLY)    # init's: not in the image
open(sys.argv[1], "w").write("ready")
while True:
    time.sleep(0.05)
"""


def _held_restored(procs, store, tmp_path, script: str):
    """Run `script` (it writes "ready" to its argument once its /proc files are held),
    checkpoint it, kill it and restore it: the restored processes."""
    out = tmp_path / "holder.out"
    proc = procs.start([sys.executable, "-c", script, str(out)])
    wait_for(lambda: out.exists() and out.read_text() == "ready", "the target to hold its /proc files")
    checkpointer.checkpoint([proc.pid], store, "holder", tree=True)
    procs.kill(proc)
    restored = checkpointer.restore(store, "holder")
    procs.restored.append(restored)
    return restored


def test_a_held_file_of_a_process_in_proc_names_the_restored_process(procs, store, tmp_path):
    """/proc/<pid>/... held open names the restored process (its PID differs: it is
    reopened at the new one, same position), not the dead original; one of a process
    outside the image (init) is the same file again (zdtm pid_file)."""
    restored = _held_restored(procs, store, tmp_path, PROC_HOLDER)
    assert not restored.warnings, restored.warnings
    [pid] = restored.pids
    assert os.readlink(f"/proc/{pid}/fd/3") == f"/proc/{pid}/comm"
    assert "pos:\t3" in open(f"/proc/{pid}/fdinfo/3").read()
    assert os.stat(f"/proc/{pid}/fd/4").st_ino == os.stat("/proc/1/status").st_ino


GONE_HOLDER = """
import os, sys, time
child = os.fork()
if child == 0:
    time.sleep(0.2)
    os._exit(0)
held = os.open(f"/proc/{child}/status", os.O_RDONLY)
os.waitpid(child, 0)                     # gone: the fd still names /proc/<child>/status
open(sys.argv[1], "w").write("ready")
while True:
    time.sleep(0.05)
"""


def test_a_held_proc_file_of_a_process_since_gone_does_not_fail_the_checkpoint(procs, store, tmp_path):
    """The process behind a held /proc/<pid>/... file has exited (a monitor's stale fd):
    the checkpoint succeeds, and the file comes back as /dev/null with a warning."""
    restored = _held_restored(procs, store, tmp_path, GONE_HOLDER)
    assert any("could not be opened again" in w for w in restored.warnings), restored.warnings


def test_syscall_user_dispatch_is_off_for_the_stop_and_kept(procs, store, binaries, tmp_path):
    """A thread with syscall user dispatch on (Wine) whose selector says BLOCK when frozen:
    the checkpointer's injected calls were dispatched to it as SIGSYS ("stopped
    unexpectedly (signal 31)": stress-ng's prctl stressor), and a restore lost the dispatch
    (the program's next caught call ran in the kernel). Dispatch is off while the process
    is stopped, on again at the thaw, and in the image for a restore."""
    out = tmp_path / "dispatch.out"
    proc = procs.start([str(binaries / "syscall_dispatch"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to dispatch its calls")
    for n in range(3):
        checkpointer.checkpoint([proc.pid], store, f"dispatch{n}")
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) > lines + 5 or proc.poll() is not None, "the checkpointed target to go on")
    assert proc.poll() is None and not [line for line in ok_lines(out) if "BAD" in line], ok_lines(out)[-3:]
    procs.kill(proc)
    restored_goes_on(procs, store, "dispatch2", out)


SPECIAL_FD_TARGET = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
nr, args = {"userfaultfd": (323, (0o2000000,)), "fanotify": (300, (0, 0))}[sys.argv[2]]
if libc.syscall(nr, *args) < 0:
    sys.exit(3)
open(sys.argv[1], "w").write("ready")
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["userfaultfd", "fanotify"])
def test_a_file_of_a_kind_not_kept_is_refused_by_its_name(procs, store, tmp_path, kind):
    """The refusal names the kind of file (it said "fanotify and other special files" for a
    userfaultfd) and leaves the process running."""
    out = tmp_path / "special.out"
    proc = procs.start([sys.executable, "-c", SPECIAL_FD_TARGET, str(out), kind])
    wait_for(lambda: out.exists() and out.read_text() == "ready", f"the target's {kind}")
    with pytest.raises(Unsupported, match=rf"fd \d+ of process {proc.pid} .*: a {kind} cannot be checkpointed"):
        checkpointer.checkpoint([proc.pid], store, kind)
    assert proc.poll() is None
