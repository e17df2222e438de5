"""What the stop no longer reads, because it cannot have changed: each shortcut with the
case that would catch it stale. A process's thread count (one stat of /proc/PID/task) stands
for a second listing of its threads; a seccomp mode of 0 in the main thread's status
(read while frozen) for asking the kernel for its filters; the text of /proc/PID/limits for
parsing it again."""
from __future__ import annotations

import os

import pytest

from checkpointer import freeze, load_image, procfs
from checkpointer.incremental import Incremental
from ckpt_helpers import ok_lines, wait_for


def _running(pid: int, held: set[int]) -> list[str]:
    """The tasks of `pid` that are not `held` and still alive, with their states."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            state = procfs.stat_fields(int(tid))[2]
        except procfs.ProcessGone:
            continue
        if int(tid) not in held and state not in ("Z", "X"):
            found.append(f"{tid}: {state}")
    return found


def test_a_thread_made_while_its_process_is_being_frozen_is_frozen_too(procs, binaries, tmp_path):
    """The freeze stops the threads it lists, then compares the kernel's thread count with
    the threads it holds: a thread made between the listing and the stop of its maker is
    counted, and frozen after a second listing."""
    out = tmp_path / "churn.out"
    proc = procs.start([str(binaries / "thread_churn"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the target to make threads")
    for _ in range(40):
        with freeze([proc.pid]) as frozen:
            held = set(frozen.processes[proc.pid].threads)
            assert not _running(proc.pid, held), "threads left running in a freeze"
            assert procfs.thread_count(proc.pid) == len(held)
    made = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) > made, "the target to make threads after the thaws")


def _before_and_after(procs, store, tmp_path, change: str, read, setup: str = "") -> list:
    """`read(process record)` of two checkpoints of a Python process that runs the code
    `change` between them (and `setup` before the first)."""
    out, go = tmp_path / "change.out", tmp_path / "go"
    script = f"""
import os, time
{setup}
out = open({str(out)!r}, "w")
print("ok waiting", file=out, flush=True)
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
{change}
print("ok changed", file=out, flush=True)
while True:
    time.sleep(0.01)
"""
    proc = procs.start([os.sys.executable, "-c", script])
    wait_for(lambda: out.exists() and ok_lines(out), "the target to start")
    inc = Incremental()
    try:
        found = []
        for round_ in range(2):
            with freeze([proc.pid]) as frozen:
                root = inc.capture(frozen, store)
            found.append(read(load_image(store, root).processes[0]))
            if round_ == 0:
                go.touch()
                wait_for(lambda: len(ok_lines(out)) >= 2, "the target to make its change")
    finally:
        inc.close()
    return found


def test_a_seccomp_filter_installed_between_two_checkpoints_is_in_the_second(procs, store, tmp_path):
    """The first checkpoint sees no filter (the status's Seccomp: 0, the kernel not asked);
    the process then installs one: the next checkpoint reads the status anew and records it."""
    install = """
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
allow = struct.pack("HBBI", 0x06, 0, 0, 0x7fff0000)          # BPF_RET | BPF_K: SECCOMP_RET_ALLOW
prog = ctypes.create_string_buffer(allow)
fprog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(prog))
buf = ctypes.create_string_buffer(fprog)
assert libc.prctl(38, 1, 0, 0, 0) == 0                       # PR_SET_NO_NEW_PRIVS
assert libc.syscall(317, 1, 0, buf) == 0, ctypes.get_errno()  # seccomp(SECCOMP_SET_MODE_FILTER)
"""
    filters = _before_and_after(procs, store, tmp_path, install, lambda record: record["seccomp"]["filters"])
    assert filters[0] == [] and len(filters[1]) == 1, filters


def test_a_limit_changed_between_two_checkpoints_is_in_the_second(procs, store, tmp_path):
    """The stop parses /proc/PID/limits once per text it reads: the process lowers a limit
    after the first checkpoint, and the second records the new value."""
    lower = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
"""
    limits = _before_and_after(procs, store, tmp_path, lower, lambda record: record["rlimits"]["RLIMIT_NOFILE"])
    assert limits[1] == [limits[0][0] - 1, limits[0][1]], limits


NEW_HANDLER = """
import signal
signal.signal(signal.SIGUSR2, lambda *_: None)
"""
NEW_TIMER = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
timer = ctypes.c_int()
assert libc.timer_create(1, None, ctypes.byref(timer)) == 0, ctypes.get_errno()     # CLOCK_MONOTONIC
assert libc.timer_settime(timer, 0, (ctypes.c_long * 4)(0, 0, 3600, 0), None) == 0  # in an hour
"""
NEW_THREAD = """
import threading
threading.Thread(target=lambda: threading.Event().wait(), daemon=True).start()
"""


@pytest.mark.parametrize("change", [NEW_HANDLER, NEW_TIMER, NEW_THREAD], ids=["handler", "timer", "thread"])
def test_a_handler_timer_or_thread_made_between_two_checkpoints_is_in_the_second(procs, store, tmp_path, change):
    """The batch of injected calls that reads a process's state from inside is made once
    per shape of the process (capture._state_calls: its caught and ignored signals, POSIX
    timers and threads): a new handler, timer or thread changes the shape, and the second
    checkpoint records it."""
    shapes = _before_and_after(procs, store, tmp_path, change, lambda record: (
        "12" in record["sigactions"], [t["remaining"][0] > 3000 for t in record["posix_timers"]],
        len(record["threads"])), setup=NEW_THREAD)    # (glibc's handlers for threads set up before)
    assert shapes[0] == (False, [], 2), shapes
    assert shapes[1] == {NEW_HANDLER: (True, [], 2), NEW_TIMER: (False, [True], 2),
                         NEW_THREAD: (False, [], 3)}[change], shapes


def _memory_fds(pid: int) -> list[str]:
    """Our fds open on the memory of process `pid`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == f"/proc/{pid}/mem":
                found.append(fd)
        except OSError:
            continue
    return found


def test_the_memory_fd_a_stop_keeps_open_is_closed_with_its_window(procs, store, binaries, tmp_path):
    """Inside a freeze window one /proc/PID/mem fd serves every read and injection of a
    task (procfs.open_memory); the window's end closes it: none is left after a checkpoint,
    and none is open between two."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out), "8"])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the counter to run")
    inc = Incremental()
    try:
        for _ in range(2):
            with freeze([proc.pid]) as frozen:
                inc.capture(frozen, store)
                assert len(_memory_fds(proc.pid)) == 1      # one, for the vdso check and the injections
            assert _memory_fds(proc.pid) == []
    finally:
        inc.close()
