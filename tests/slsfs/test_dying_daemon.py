"""slsfs.dying_daemon finds the process holding a store's lock and tells a dying one
(which it frees by aborting the store's FUSE connections) from a live one (left alone)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from slsfs import dying_daemon

from group_helpers import wait_for


@contextlib.contextmanager
def flock_holder(path):
    """flock(1) holding `path` exclusively (its `sleep` child inherits the lock: both are
    killed, as one process group, at the end)."""
    holder = subprocess.Popen(["flock", "--exclusive", str(path), "sleep", "60"], start_new_session=True)
    try:
        yield holder
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_live_lock_holder_is_found_and_left_alone(tmp_path):
    (tmp_path / "lock").touch()
    with flock_holder(tmp_path / "lock") as holder:
        assert wait_for(lambda: dying_daemon.lock_holder(str(tmp_path)), "the lock to be taken") == holder.pid
        assert not dying_daemon.dying(holder.pid)
        assert dying_daemon.release(str(tmp_path)) is False
        assert holder.poll() is None
    wait_for(lambda: dying_daemon.lock_holder(str(tmp_path)) is None, "the lock to be let go")
    assert dying_daemon.lock_holder(str(tmp_path / "nowhere")) is None


def test_a_zombie_is_dying():
    child = subprocess.Popen(["true"])
    wait_for(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             "the child to exit")
    assert dying_daemon.dying(child.pid)
    child.wait()
    assert not dying_daemon.dying(child.pid)     # gone: nothing to free


HOLD_STORE = """
import sys, time
from objectstore import Store
store = Store.open(sys.argv[1])
print("open", flush=True)
time.sleep(60)
"""


def test_a_store_writer_is_found_by_the_lock_files_record(tmp_path):
    from objectstore import Store
    Store.init(tmp_path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_STORE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        pid, fd = map(int, (tmp_path / "lock").read_text().split())
        assert pid == holder.pid and os.readlink(f"/proc/{pid}/fd/{fd}") == str(tmp_path / "lock")
        assert dying_daemon.lock_holder(str(tmp_path)) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert dying_daemon.lock_holder(str(tmp_path)) is None        # named, but gone


def test_a_record_naming_a_process_that_does_not_hold_the_lock_is_not_believed(tmp_path):
    (tmp_path / "lock").write_text(f"{os.getpid()} 0\n")         # alive, its fd 0 is no lock
    assert dying_daemon.lock_holder(str(tmp_path)) is None
    with flock_holder(tmp_path / "lock") as holder:              # one that did not write its record
        assert wait_for(lambda: dying_daemon.lock_holder(str(tmp_path)), "the lock to be taken") == holder.pid
