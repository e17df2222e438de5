"""slsfs.dying_daemon finds the process holding a store's lock and tells a dying one
(which it frees by aborting the store's FUSE connections) from a live one (left alone)."""
from __future__ import annotations

import subprocess
import time

from slsfs import dying_daemon

from group_helpers import wait_for


def test_a_live_lock_holder_is_found_and_left_alone(tmp_path):
    (tmp_path / "lock").touch()
    holder = subprocess.Popen(["flock", "--exclusive", str(tmp_path / "lock"), "sleep", "60"])
    try:
        assert wait_for(lambda: dying_daemon.lock_holder(str(tmp_path)), "the lock to be taken") == holder.pid
        assert not dying_daemon.dying(holder.pid)
        assert dying_daemon.release(str(tmp_path)) is False
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 30
    while dying_daemon.lock_holder(str(tmp_path)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)                  # its child `sleep` holds the lock until it ends
    assert dying_daemon.lock_holder(str(tmp_path / "nowhere")) is None


def test_a_zombie_is_dying():
    child = subprocess.Popen(["true"])
    wait_for(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             "the child to exit")
    assert dying_daemon.dying(child.pid)
    child.wait()
    assert not dying_daemon.dying(child.pid)     # gone: nothing to free
