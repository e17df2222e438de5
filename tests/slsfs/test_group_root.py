"""`sls run --root`: the volume is the group's `/`, in its own mount namespace, with the
host's system directories read-only, /proc of its own PID namespace, /dev and /tmp; after
a crash it comes back in the same root and again in a namespace of its own. Nothing stays
mounted after `sls stop`."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

from group_helpers import wait_for

# counts in memory and in /tmp/n, with its PID and the name /proc gives PID 1; holds its
# own /dev/null open (fd 3) and a file it removed from /tmp (fd 4, in the volume)
SCRIPT = ('exec 3</dev/null 4<>/tmp/scratch; echo kept >&4; rm /tmp/scratch; '
          'i=0; while :; do i=$((i+1)); read c < /proc/1/comm; echo "$i $$ $c" > /tmp/n.tmp; '
          'mv /tmp/n.tmp /tmp/n; sleep 0.02; done')


def state(store) -> tuple[int, str, str] | None:
    try:
        count, pid, comm = (store.mnt / "tmp" / "n").read_text().split()
    except (OSError, ValueError):
        return None
    return int(count), pid, comm


def mounts_at_or_under(path: Path) -> list[str]:
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def assert_own_mount_namespace(store, group: str) -> None:
    """The group's process is in a mount namespace of its own, whose /proc the host does not see."""
    pid = store.group(group)["pids"][0]
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert str(store.mnt / "proc") not in mounts_at_or_under(store.mnt), "the group's /proc leaked to the host"
    with open(f"/proc/{pid}/mountinfo") as f:        # mount points as seen from its root
        inside = [line.split()[4] for line in f]
    assert {"/", "/proc", "/usr", "/dev"} <= set(inside), f"the group's mounts: {inside}"


def assert_holds_no_host_mount(store, group: str, host_mount: Path) -> None:
    """The group's mount namespace keeps none of the host's other mounts alive: only the
    chain of mounts down to its root, its root's own mounts, and the chains to files its
    processes hold outside the root (its output in the store, /dev/null). With every host
    mount copied in (a private or slave copy, as on this machine, whose mounts are all
    private), a host umount left the file system alive in the group: a FUSE mount's daemon
    serving on and its store locked, a disk busy, until the group ended."""
    pid = store.group(group)["pids"][0]
    launcher = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert os.readlink(f"/proc/{launcher}/ns/mnt") == os.readlink(f"/proc/{pid}/ns/mnt")
    with open(f"/proc/{launcher}/mountinfo") as f:     # the launcher is in it, not chrooted
        points = {line.split()[4] for line in f}
    assert str(host_mount) not in points, "the group's namespace holds the host's mount"
    held = sorted(p for p in points if not (within(p, store.mnt) or within(store.mnt, p) or within(store.path, p)
                                            or p == "/dev"))
    assert not held, f"host mounts held by the group: {held}"


def within(path: str | Path, directory: str | Path) -> bool:
    return os.path.commonpath([str(path), str(directory)]) == str(directory)


@pytest.fixture
def host_mount(tmp_path):
    """A tmpfs the host mounted before the group started. Unmounted at the end."""
    path = tmp_path / "host-mount"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "slsfs-test", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("crashed", ["everything", "the group alone"])
def test_root_group_lives_in_its_volume_and_survives_a_crash(group_store, host_mount, crashed):
    """`the group alone`: its daemon runs on and restores it in place (its mount made again,
    the root's mounts released and prepared again)."""
    store = group_store
    store.sls("run", "--root", "--store", str(store.path), "--name", "r", "--hz", "5", "--",
              "/bin/sh", "-c", SCRIPT)
    count, pid, comm = wait_for(lambda: (s := state(store)) and s[0] > 10 and s, "the rooted shell to count")
    assert (pid, comm) == ("1", "sh"), "the group must see itself as PID 1 in its own /proc"
    assert_own_mount_namespace(store, "r")
    assert_holds_no_host_mount(store, "r", host_mount)
    assert (store.mnt / "etc" / "os-release").read_text() == Path("/etc/os-release").read_text()
    with pytest.raises(OSError) as raised:
        (store.mnt / "usr" / "written-by-test").write_text("x")
    assert raised.value.errno == errno.EROFS

    floor = state(store)[0]
    store.checkpoint("r")                                    # holds a count >= floor
    daemon = store.ps()["daemon"]
    if crashed == "everything":
        store.crash()
    else:
        os.kill(store.group("r")["pids"][0], signal.SIGKILL)
        wait_for(lambda: not store.group("r")["running"], "the group to end")
    at_crash = state(store)
    store.sls("restore", "r", "--store", str(store.path))
    assert (store.ps()["daemon"] == daemon) == (crashed != "everything")
    first = wait_for(lambda: (s := state(store)) and s != at_crash and s, "the restored shell to write")
    assert first[0] >= floor, f"the restored group started over at {first[0]} (checkpointed >= {floor})"
    assert first[1:] == ("1", "sh"), f"after the restore: {first}"
    wait_for(lambda: (s := state(store)) and s[0] > first[0] + 10, "the restored shell to count on")
    assert_own_mount_namespace(store, "r")
    assert_holds_no_host_mount(store, "r", host_mount)
    pid = store.group("r")["pids"][0]
    assert open(f"/proc/{pid}/fd/4").read() == "kept\n", "the removed file lost its contents"
    assert os.stat(f"/proc/{pid}/fd/3").st_rdev == os.stat("/dev/null").st_rdev

    store.sls("stop", "--store", str(store.path))
    left = mounts_at_or_under(store.mnt)
    assert not left, f"still mounted: {left}\n" + (store.path / "daemon.log").read_text()[-3000:]


def test_host_mounts_that_came_after_the_start_listed_them_are_detached(tmp_path, host_mount):
    """A host mount made while a --root group starts (after the daemon listed the host's
    mounts, before the namespace copied them) would stay alive in the group: the start's
    second look, from inside the namespace, detaches it, and keeps the chains to what the
    group's processes hold (here, the sleeping process's cwd)."""
    import trio
    from slsfs import rootfs
    root, cwd = tmp_path / "root", tmp_path / "cwd"
    root.mkdir()
    cwd.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "slsfs-test-cwd", str(cwd)], check=True)
    try:
        with unshared(cwd) as (launcher, child, points):
            assert str(host_mount) in points()
            trio.run(rootfs.detach_late_mounts, str(root), launcher, [child])
            assert str(host_mount) not in points()
            assert str(cwd) in points() and "/" in points()
    finally:
        subprocess.run(["umount", "-l", str(cwd)], check=False)


@contextmanager
def unshared(cwd, *flags: str) -> Iterator[tuple[int, int, Callable[[], set[str]]]]:
    """`unshare --mount --fork [flags] sleep 60` in `cwd`, both killed at the end: its pid, its
    child's (sleep), and a function giving the mount points of its mount namespace."""
    launcher = subprocess.Popen(["unshare", "--mount", "--propagation", "private", *flags, "--fork", "--kill-child",
                                 "sleep", "60"], cwd=cwd)
    try:
        child = wait_for(lambda: next(iter(Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text()
                                           .split()), None), "unshare's child")
        wait_for(lambda: os.readlink(f"/proc/{child}/exe").endswith("/sleep"), "the child to run sleep")
        yield launcher.pid, int(child), lambda: {line.split()[4] for line in open(f"/proc/{launcher.pid}/mountinfo")}
    finally:
        launcher.kill()
        launcher.wait()


def test_a_restored_groups_namespace_loses_a_host_mount_the_host_dropped_after_its_copy(tmp_path, host_mount):
    """enter_restored detaches the host mounts a restored --root group does not use as its
    own namespace has them: a host mount unmounted after the restore copied it is in that
    namespace only (before: the host's mount table was read, which no longer had it, and
    the copy stayed alive for the group's life)."""
    import trio
    from slsfs import rootfs
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    with unshared("/", "--pid") as (launcher, child, points):
        subprocess.run(["umount", str(host_mount)], check=True)      # on the host only
        assert str(host_mount) in points()
        trio.run(rootfs.enter_restored, str(root), [child], launcher)
        assert str(host_mount) not in points()
        assert str(root / "proc") in points() and "/" in points()


# opens a pty pair in the group's /dev and keeps talking through it (raw: no echo), its
# count and the slave's name in /pty.count
PTY_TALKER = """
import os, time, tty
master, slave = os.openpty()
tty.setraw(slave)
n = 0
while True:
    os.write(master, b"%d\\n" % n)
    assert os.read(slave, 64) == b"%d\\n" % n
    n += 1
    with open("/pty.tmp", "w") as f:
        f.write("%d %s" % (n, os.ttyname(slave)))
    os.rename("/pty.tmp", "/pty.count")
    time.sleep(0.02)
"""


def test_a_root_group_opens_ptys_and_talks_through_them_after_a_crash(group_store):
    """/dev/ptmx and /dev/pts as a container runtime gives them: a terminal multiplexer,
    `script` or an expect-style driver in a --root group opens pty pairs (it failed: 'out of
    pty devices'), and the pair works on after a restore."""
    store = group_store
    count = lambda: int((store.mnt / "pty.count").read_text().split()[0]) if (store.mnt / "pty.count").exists() else 0
    store.sls("run", "--root", "--store", str(store.path), "--name", "pty", "--hz", "5", "--",
              "/usr/bin/python3", "-c", PTY_TALKER)
    wait_for(lambda: count() > 10, "the group to talk through its pty")
    assert (store.mnt / "pty.count").read_text().split()[1].startswith("/dev/pts/")
    store.checkpoint("pty")
    at_checkpoint = count()
    store.crash()
    store.sls("restore", "pty", "--store", str(store.path))
    wait_for(lambda: count() > at_checkpoint + 10, "the restored group to talk through its pty")
    assert store.group("pty")["running"]
    store.sls("stop", "--store", str(store.path))
    left = mounts_at_or_under(store.mnt)
    assert not left, f"still mounted: {left}"


# a Unix socket server at an absolute path of its root: answers each client its count
ECHO_SERVER = """
import os, socket
server = socket.socket(socket.AF_UNIX)
server.bind("/tmp/echo.sock")
server.listen()
n = 0
while True:
    client, _ = server.accept()
    n += 1
    client.sendall(b"%d %s" % (n, server.getsockname().encode()))
    client.close()
"""


def ask(path: Path) -> tuple[int, str]:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        count, name = client.recv(4096).decode().split()
    return int(count), name


def test_a_root_groups_unix_server_is_bound_in_its_root_again_after_each_restore(group_store):
    """A socket bound to /tmp/echo.sock in the group is <mount>/tmp/echo.sock on the host:
    the restore binds it there again (it bound the host's /tmp/echo.sock, and failed: 'No such
    file or directory' for tmux's /tmp/tmux-0/default), under the name the server gave it,
    so that the next checkpoint records that name and a second restore works too."""
    store = group_store
    path = store.mnt / "tmp" / "echo.sock"
    store.sls("run", "--root", "--store", str(store.path), "--name", "echo", "--hz", "0", "--",
              "/usr/bin/python3", "-c", ECHO_SERVER)
    wait_for(lambda: path.exists(), "the server to listen")
    assert ask(path) == (1, "/tmp/echo.sock")
    for answered in (1, 2):
        store.checkpoint("echo")
        store.crash()
        store.sls("restore", "echo", "--store", str(store.path))
        assert ask(path) == (answered + 1, "/tmp/echo.sock")
    store.sls("stop", "--store", str(store.path))
