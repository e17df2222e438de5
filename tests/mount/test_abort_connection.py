"""mount.filesystem.abort_own_connection ends every request still open on a mount's FUSE
connection: a daemon on its way out uses it before it unmounts, so that no request it
read but never answered (one of its own threads', say) can keep it from exiting, and
detaches the mount. Unless that mount is attached where the daemon mounted it, it does
nothing: the connection number may have gone to another file system's mount."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from mount import fusectl
from mount.filesystem import abort_own_connection, mount_device
from mount_helpers import pid_alive, wait_for

STAT_NEW_NAME = """
import os, sys
try:
    os.stat(sys.argv[1])
    print("answered")
except OSError as exc:
    print(exc.errno)
"""


def waiting_for_the_daemon(pid: int) -> bool:
    """Whether process `pid` sleeps in a FUSE request (fs/fuse/dev.c request_wait_answer)."""
    with open(f"/proc/{pid}/wchan") as f:
        return f.read() == "request_wait_answer"


def test_a_request_nobody_answers_ends_once_aborted(mnt):
    device = mount_device(str(mnt.path))
    assert device is not None and device.startswith("0:")
    os.kill(mnt.pid, signal.SIGSTOP)                     # the daemon answers nothing now
    try:
        waiting = subprocess.Popen([sys.executable, "-c", STAT_NEW_NAME, str(mnt.path / "nobody-answers")],
                                   stdout=subprocess.PIPE, text=True)
        connection = int(device.split(":")[1])
        # the stat itself waits (another process's request, a df's statfs say, may be the one
        # queued first: aborted with it still starting, the stat went to the directory below)
        wait_for(lambda: waiting_for_the_daemon(waiting.pid), "the stat to wait for the daemon")
        assert fusectl.waiting(connection) > 0
        elsewhere = str(mnt.path.parent)     # not mounted there, and the number's mount is another store's:
        assert not abort_own_connection(elsewhere, device, "/another/store")    # (the number may be reused)
        assert waiting.poll() is None, f"the stat on the stopped daemon ended: {waiting.communicate()[0]!r}"
        assert fusectl.waiting(connection) > 0, "the request on the stopped daemon ended"
        assert abort_own_connection(str(mnt.path), device, str(mnt.store))
        out, _ = waiting.communicate(timeout=30)
        assert int(out) in (errno.ECONNABORTED, errno.ENOTCONN)
        assert mount_device(str(mnt.path)) != device, "the aborted mount was left attached"
    finally:
        os.kill(mnt.pid, signal.SIGCONT)
    wait_for(lambda: not os.path.exists(f"/proc/{mnt.pid}") or
             open(f"/proc/{mnt.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             "the daemon to end with its connection", 60)


def test_a_mount_unmounted_between_the_check_and_the_abort_keeps_its_number(mnt, monkeypatch):
    """The mount is held from the check that the connection number is its to the abort: an
    unmount landing between the two ended its superblock and freed the number, which the
    kernel gives to the next new mount of any file system, and the abort then ended that
    mount (seen as another test's new mount answering ENOTCONN under load). Held, the
    superblock (its bdi, named by the number) is still there when the abort comes."""
    device = mount_device(str(mnt.path))
    abort_by_number = fusectl.abort
    still_held = []

    def unmount_first(connection: int) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt.path)], check=True)
        still_held.append(os.path.exists(f"/sys/class/bdi/{device}"))
        abort_by_number(connection)

    assert os.path.exists(f"/sys/class/bdi/{device}")
    monkeypatch.setattr(fusectl, "abort", unmount_first)
    assert abort_own_connection(str(mnt.path), device, str(mnt.store))
    assert still_held == [True], "the number was free between the check and the abort"
    wait_for(lambda: not pid_alive(mnt.pid), "the aborted daemon to end")


def test_fusectl_is_read_through_a_mount_attached_nowhere():
    """Where no system mount of fusectl exists, reading it mounts nothing: a mount made on
    a directory and detached right after was left behind when a SIGKILL fell between."""
    if os.path.ismount(fusectl.SYSTEM_PATH):
        pytest.skip("this machine mounts fusectl itself")
    probe = "from mount import fusectl\nprint(fusectl._root_fd() >= 0, fusectl.waiting(1 << 30))"
    done = subprocess.run(["strace", "-f", "-e", "trace=mount", "-o", "/dev/stderr", sys.executable, "-c", probe],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "0"], done.stdout + done.stderr
    assert "mount(" not in done.stderr, f"fusectl was attached somewhere for a moment: {done.stderr}"
