"""Checkpoint -> SIGKILL -> restore of real processes (C and Python), checked by the
targets themselves: their output must continue as one unbroken sequence, same PID."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import time

import pytest

import checkpointer
from checkpointer import images, load_image
from checkpointer.procfs import status
from checkpointer.restore import TOP_RESTORE_PHASES
from checkpointer.stopwatch import recording
from ckpt_helpers import BIG_HEAP, HEAP_CHECK_LINES, assert_unbroken, ns_pid, ok_lines, wait_for

LINE = 20  # bytes per counter line


def run_until(path, lines: int) -> None:
    def enough() -> bool:
        found = ok_lines(path) if path.exists() else []
        assert not any(line.startswith("BAD") for line in found), f"target reported: {found}"
        return len(found) >= lines
    wait_for(enough, f"{lines} lines in {path.name}")


def checkpoint_kill_restore(procs, store, proc, out, name="img", **restore_options):
    """Checkpoint proc, SIGKILL it, restore the image; returns (restored, size of out at kill)."""
    checkpointer.checkpoint([proc.pid], store, name)
    procs.kill(proc)
    size_at_kill = out.stat().st_size
    restored = checkpointer.restore(store, name, **restore_options)
    procs.restored.append(restored)
    return restored, size_at_kill


def wait_past(out, size: int, extra_lines: int = 20, line: int = LINE) -> None:
    """Wait until the restored target has overwritten everything the original wrote, and more."""
    def written() -> bool:
        assert not any(x.startswith("BAD") for x in ok_lines(out)), f"target reported: {ok_lines(out)[-3:]}"
        return out.stat().st_size >= size + extra_lines * line
    wait_for(written, "the restored target to write on")


def test_c_counter_continues_with_its_pid_fds_and_cwd(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    run_until(out, 20)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    [pid] = restored.pids
    wait_past(out, size)
    assert assert_unbroken(out, proc.pid) > size // LINE
    assert ns_pid(pid) == proc.pid
    image_fds = sorted(fd["fd"] for fd in load_image(store, "img").processes[0]["fds"])
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == image_fds == [0, 1, 2, 3]
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)
    assert os.readlink(f"/proc/{pid}/exe") == str(binaries / "counter")


def test_python_interpreter_with_live_objects_and_handler(procs, store, tmp_path):
    out = tmp_path / "python.out"
    proc = procs.python("live_objects.py", str(out))
    run_until(out, 20)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    [pid] = restored.pids
    wait_past(out, size, line=29)
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: any(line.startswith("usr1") for line in ok_lines(out)), "the SIGUSR1 handler's line")
    run_until(out, len(ok_lines(out)) + 10)
    assert assert_unbroken(out, proc.pid) > size // 29


def test_large_heap_survives_intact(procs, store, binaries, tmp_path):
    out = tmp_path / "heap.out"
    proc = procs.start([str(binaries / "counter"), str(out), *BIG_HEAP])
    run_until(out, 5)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    wait_past(out, size, extra_lines=HEAP_CHECK_LINES)
    assert assert_unbroken(out, proc.pid) >= size // LINE + HEAP_CHECK_LINES
    assert load_image(store, "img").page_count() >= 64 * 256


def test_same_image_restored_twice_in_separate_namespaces(procs, store, binaries, tmp_path):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    out = first_dir / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)], cwd=first_dir)
    run_until(out, 20)
    first, size = checkpoint_kill_restore(procs, store, proc, out)
    shutil.copytree(first_dir, second_dir)
    second = checkpointer.restore(store, "img", remap={str(first_dir): str(second_dir)})
    procs.restored.append(second)
    wait_past(out, size)
    wait_past(second_dir / "counter.out", size)
    for directory, restored in ((first_dir, first), (second_dir, second)):
        assert assert_unbroken(directory / "counter.out", proc.pid) > size // LINE
        assert ns_pid(restored.pids[0]) == proc.pid
        assert os.readlink(f"/proc/{restored.pids[0]}/cwd") == str(directory)
    assert first.pids != second.pids


def test_the_stubs_that_stay_say_what_they_are(procs, store, binaries, tmp_path):
    """`ps` names the launcher and the restored namespace's stub PID 1 (they stay for the
    restored processes' lifetime), and the restored process by its own name."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    run_until(out, 10)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    assert restored.ns_init is not None        # (the counter is not PID 1 of its namespace)

    def comm(pid: int) -> str:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    assert [comm(restored.launcher.pid), comm(restored.ns_init), comm(restored.pids[0])] == [
        "sls-launcher", "sls-ns-init", "counter"]
    wait_past(out, size)


def test_the_restore_says_when_its_processes_were_let_go(procs, store, binaries, tmp_path):
    """Restored.running_at is the instant the last task was let go (the end of the restore
    as its processes see it, as Frozen.thawed_at is the stop's): inside the restore() call,
    every restored task untraced by then; the restorer's own CPU back comes after it, in a
    phase of its own (after_let_go_unpin), not in let_go."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    run_until(out, 10)
    checkpointer.checkpoint([proc.pid], store, "img")
    procs.kill(proc)
    size = out.stat().st_size
    called = time.perf_counter()
    with recording() as phases:
        restored = checkpointer.restore(store, "img")
    returned = time.perf_counter()
    procs.restored.append(restored)
    assert restored.running_at is not None and called < restored.running_at <= returned
    for pid in [restored.launcher.pid, restored.ns_init] + restored.pids:
        assert status(pid)["TracerPid"] == "0", f"task {pid} still traced after the restore"
    assert {"let_go", "after_let_go_unpin"} <= set(phases) and set(TOP_RESTORE_PHASES) <= set(phases)
    wait_past(out, size)


def test_restore_without_namespace_gets_the_pid_back(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    run_until(out, 10)
    restored, size = checkpoint_kill_restore(procs, store, proc, out, new_pid_namespace=False)
    assert restored.pids == [proc.pid] and restored.ns_init is None
    wait_past(out, size)
    assert assert_unbroken(out, proc.pid) > size // LINE


def test_process_that_exits_during_checkpoint_leaves_no_image(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    run_until(out, 5)
    with pytest.raises(checkpointer.ProcessGone, match=f"process {proc.pid} exited"):
        with checkpointer.freeze([proc.pid]) as frozen:
            proc.kill()  # SIGKILL goes through even a ptrace stop
            wait_for(lambda: proc.poll() is not None, "the target to die")
            checkpointer.capture(frozen, store)
    assert images(store) == {}
    with pytest.raises(checkpointer.ProcessGone):
        checkpointer.checkpoint([proc.pid], store, "gone")
    assert images(store) == {} and store.log() == []


def test_unsupported_fd_is_refused_and_process_keeps_running(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as netlink:  # NETLINK_ROUTE
        proc = procs.start([str(binaries / "counter"), str(out)], stderr=netlink.fileno())
    run_until(out, 5)
    with pytest.raises(checkpointer.Unsupported, match=r"fd 2 of process \d+ \(socket:.*only TCP, UDP and Unix"):
        checkpointer.checkpoint([proc.pid], store, "img")
    assert images(store) == {}
    before = len(ok_lines(out))
    run_until(out, before + 5)  # thawed: still counting
    assert assert_unbroken(out, proc.pid) >= before + 5


def test_threads_keep_their_tids_tls_and_locks(procs, store, binaries, tmp_path):
    out = tmp_path / "threads.out"
    proc = procs.start([str(binaries / "threads"), str(out)])
    run_until(out, 20)
    tids = sorted(int(t) for t in os.listdir(f"/proc/{proc.pid}/task"))
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    [pid] = restored.pids
    # the target checks every worker's progress each 200 lines: wait for two such checks
    wait_past(out, size, extra_lines=420)
    assert assert_unbroken(out, proc.pid) > size // LINE + 400
    restored_tids = sorted(ns_pid(int(t)) for t in os.listdir(f"/proc/{pid}/task"))
    assert restored_tids == tids and len(tids) == 5


def test_signals_timers_unlinked_file_shared_maps_eventfd(procs, store, binaries, tmp_path):
    out = tmp_path / "misc.out"
    proc = procs.start([str(binaries / "misc_state"), str(out)])
    run_until(out, 120)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    [pid] = restored.pids
    kinds = sorted(f["kind"] for f in load_image(store, "img").files)
    assert kinds == ["deleted", "device", "eventfd", "file", "file", "memfd", "signalfd"]
    assert len(load_image(store, "img").processes[0]["seccomp"]["filters"]) == 1
    status = open(f"/proc/{pid}/status").read()
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status
    wait_past(out, size, extra_lines=120)  # two interval-timer checks after the restore
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: "usr1 ok" in ok_lines(out), "the target's post-restore signal checks")
    run_until(out, len(ok_lines(out)) + 5)
    assert assert_unbroken(out, proc.pid) > size // LINE + 100


def test_epoll_loop_with_timerfd_and_eventfd(procs, store, binaries, tmp_path):
    out = tmp_path / "epoll.out"
    proc = procs.start([str(binaries / "epoll_timer"), str(out)])
    run_until(out, 20)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    kinds = sorted(f["kind"] for f in load_image(store, "img").files)
    assert {"epoll", "timerfd", "eventfd"} <= set(kinds)
    wait_past(out, size, extra_lines=110)  # only the restored timerfd, via epoll, drives the lines
    assert assert_unbroken(out, proc.pid) > size // LINE + 100


def test_terminal_is_reattached_to_dev_null_with_a_warning(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    master, slave = os.openpty()
    try:
        proc = procs.start([str(binaries / "counter"), str(out)], stdin=slave)
    finally:
        os.close(slave)
    try:
        run_until(out, 5)
        restored, size = checkpoint_kill_restore(procs, store, proc, out)
    finally:
        os.close(master)
    assert any("terminal /dev/pts/" in w and "/dev/null" in w for w in restored.warnings), restored.warnings
    assert os.readlink(f"/proc/{restored.pids[0]}/fd/0") == "/dev/null"
    wait_past(out, size)
    assert assert_unbroken(out, proc.pid) > size // LINE


def test_a_console_is_opened_again_by_its_path(procs, store, binaries, tmp_path):
    """zdtm's static/console: a process holding a console device (5, 1), as a daemon logging
    to /dev/console does, has that device again after a restore (it had /dev/null)."""
    out, console = tmp_path / "counter.out", tmp_path / "console"
    os.mknod(console, stat.S_IFCHR | 0o600, os.makedev(5, 1))
    fd = os.open(console, os.O_RDONLY | os.O_NOCTTY)
    try:
        proc = procs.start([str(binaries / "counter"), str(out)], stdin=fd)
    finally:
        os.close(fd)
    run_until(out, 5)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    assert not restored.warnings, restored.warnings
    held = os.stat(f"/proc/{restored.pids[0]}/fd/0")
    assert (os.major(held.st_rdev), os.minor(held.st_rdev)) == (5, 1)
    wait_past(out, size)
    assert assert_unbroken(out, proc.pid) > size // LINE


def test_restored_process_checkpointed_and_restored_again_keeps_its_pid(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    run_until(out, 10)
    first, size = checkpoint_kill_restore(procs, store, proc, out)
    wait_past(out, size)
    checkpointer.checkpoint(first.pids, store, "again")
    assert load_image(store, "again").processes[0]["pid"] == proc.pid  # the PID it sees, not the host's
    first.kill()
    size = out.stat().st_size
    second = checkpointer.restore(store, "again")
    procs.restored.append(second)
    assert ns_pid(second.pids[0]) == proc.pid
    wait_past(out, size)
    assert assert_unbroken(out, proc.pid) > size // LINE


def test_restore_with_a_missing_file_fails_clearly_and_leaves_nothing(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    run_until(out, 5)
    with open(out, "ab") as grow:       # over 1 MiB: the image does not keep its contents
        grow.write(bytes(2 << 20))
    checkpointer.checkpoint([proc.pid], store, "img")
    procs.kill(proc)
    out.unlink()
    stubs_before = {p for p in os.listdir("/proc") if p.isdigit() and _live_stub(p)}  # others' tests may run
    with pytest.raises(checkpointer.CheckpointError, match=f"cannot reopen {out}.*must exist"):
        procs.restored.append(checkpointer.restore(store, "img"))   # (killed at teardown if it ran)
    # SIGKILL is asynchronous: the killed stubs may take a moment to become zombies
    wait_for(lambda: {p for p in os.listdir("/proc") if p.isdigit() and _live_stub(p)} <= stubs_before,
             "the stubs of the failed restore to be gone")


def _live_stub(pid: str) -> bool:
    """A restore stub (launcher, namespace PID 1 or half-built process) still running."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            alive = fh.read().rpartition(")")[2].split()[0] != "Z"
        return alive and "slsfs-restore-stub" in os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False  # gone meanwhile, or not ours to read


def test_posix_timers_keep_ids_notification_and_time_left(procs, store, binaries, tmp_path):
    out = tmp_path / "timers.out"
    proc = procs.start([str(binaries / "posix_timers"), str(out)])
    run_until(out, 60)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    timers = sorted(load_image(store, "img").processes[0]["posix_timers"], key=lambda t: t["id"])
    assert [(t["id"], t["value"], t["interval"]) for t in timers] == [(0, 42, [0, 5000000]), (1, 7, [0, 7000000]),
                                                                      (2, 0, [0, 0])]
    assert timers[1]["notify"] == 4 and timers[1]["tid"] != proc.pid and 900 < timers[2]["remaining"][0] <= 1000
    wait_past(out, size, extra_lines=120)  # two checks that both periodic timers still tick
    assert assert_unbroken(out, proc.pid) > size // LINE + 100
