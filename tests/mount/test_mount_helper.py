"""`mount -t fuse.slsfs` and fstab lines: the kernel's mount(8) -> mount.fuse3 -> `slsfs`.

mount.fuse3 runs the program named after "fuse." from a fixed PATH
(/usr/local/sbin:/usr/local/bin:/usr/sbin:...); the `installed_helper` fixture does what
`make install` does (links the venv's `slsfs` console script into /usr/local/sbin)
when that link is missing or points elsewhere, and leaves it in place: other test runs
may be using it at the same time.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mount_helpers import Mount, is_mounted, pid_alive, sls, wait_for

INSTALLED = Path("/usr/local/sbin/slsfs")


@pytest.fixture
def installed_helper() -> Path:
    script = Path(sys.executable).parent / "slsfs"
    assert script.exists(), f"{script} is missing: run `make install` (or pip install -e .)"
    if not (INSTALLED.is_symlink() and os.readlink(INSTALLED) == str(script)):
        INSTALLED.parent.mkdir(parents=True, exist_ok=True)
        temp = INSTALLED.with_name(f".slsfs.{os.getpid()}")
        temp.symlink_to(script)
        temp.replace(INSTALLED)                   # atomic: a concurrent run never sees none
    return INSTALLED


@pytest.fixture
def store_and_mountpoint(workdir, installed_helper):
    """A Mount object (for its paths and clean-up) whose mounting the test does itself."""
    m = Mount(workdir / "m")
    sls("init", m.store)
    try:
        yield m
    finally:
        m.cleanup()


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def mount_options(path: Path) -> tuple[str, list[str]]:
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            _, target, fstype, options, *_ = line.split()
            if target == real:
                return fstype, options.split(",")
    raise AssertionError(f"{path} is not mounted")


def unmount(m: Mount) -> None:
    result = run("umount", str(m.path))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: not pid_alive(m.pid), "the daemon to exit after umount")


def test_mount_t_fuse_slsfs_serves_the_store_and_umount_keeps_it(store_and_mountpoint):
    m = store_and_mountpoint
    result = run("mount", "-t", "fuse.slsfs", str(m.store), str(m.path), "-o", "noexec,checkpoint_interval=20")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""      # like mount(8): scripts (xfstests) compare what mount prints
    assert is_mounted(m.path)
    m.pid = m.status()["pid"]
    fstype, options = mount_options(m.path)
    assert fstype == "fuse.slsfs" and "noexec" in options
    (m.path / "hello").write_bytes(b"from mount -t\n")
    unmount(m)
    assert not is_mounted(m.path)

    # default_permissions (xfstests' README.fuse, many fstab lines of FUSE file systems): slsfs
    # always has the kernel check permissions, so the option is taken and changes nothing
    result = run("mount", "-t", "fuse.slsfs", str(m.store), str(m.path), "-o", "default_permissions")
    assert result.returncode == 0, result.stderr
    m.pid = m.status()["pid"]
    assert (m.path / "hello").read_bytes() == b"from mount -t\n"
    assert "noexec" not in mount_options(m.path)[1]
    assert "default_permissions" in mount_options(m.path)[1]
    unmount(m)


def test_fstab_line_mounts_the_named_volume(store_and_mountpoint, workdir):
    m = store_and_mountpoint
    fstab = workdir / "fstab"
    fstab.write_text(f"# test fstab\n{m.store} {m.path} fuse.slsfs volume=data,nofail,defaults 0 0\n")
    result = run("mount", "--fstab", str(fstab), str(m.path))
    assert result.returncode == 0, result.stderr
    status = m.status()
    m.pid = status["pid"]
    assert status["volume"] == "data"
    (m.path / "in-data").write_text("x")
    unmount(m)
    with m.open_store() as store:
        assert "data" in store.volumes()


def test_unknown_option_is_refused_with_the_list_of_known_ones(store_and_mountpoint):
    m = store_and_mountpoint
    result = run("mount", "-t", "fuse.slsfs", str(m.store), str(m.path), "-o", "volume=main,bogus")
    assert result.returncode != 0
    assert "unknown mount option 'bogus'" in result.stderr and "volume=NAME" in result.stderr
    assert not is_mounted(m.path)


def test_not_a_store_is_a_one_line_error(store_and_mountpoint, workdir):
    m = store_and_mountpoint
    result = run("mount", "-t", "fuse.slsfs", str(workdir), str(m.path))
    assert result.returncode != 0
    assert "is not a slsfs store" in result.stderr
    assert not is_mounted(m.path)


def test_noatime_strictatime_and_ro_decide_what_a_read_stamps(store_and_mountpoint):
    """The atime options (xfstests generic/003): the daemon applies them, FUSE inodes being
    S_NOATIME to the kernel (libfuse would pass relatime, strictatime, nodiratime on to the
    kernel, which refuses them)."""
    m = store_and_mountpoint
    path = m.path / "f"

    def mount_with(options: str) -> None:
        result = run("mount", "-t", "fuse.slsfs", str(m.store), str(m.path), "-o", options)
        assert result.returncode == 0, result.stderr
        m.pid = m.status()["pid"]

    def atime_after_read() -> int:
        time.sleep(0.05)                      # the coarse clock moves on
        with open(path, "rb") as f:
            f.read()
        return os.stat(path).st_atime_ns

    mount_with("noatime,nodiratime")
    assert "noatime" in mount_options(m.path)[1]
    path.write_bytes(b"x")
    created = os.stat(path).st_atime_ns
    assert atime_after_read() == created
    unmount(m)
    mount_with("strictatime,lazytime")
    first = atime_after_read()
    assert created < first < atime_after_read()
    unmount(m)
    mount_with("ro,strictatime")
    stamped = os.stat(path).st_atime_ns
    assert atime_after_read() == stamped
    unmount(m)


def test_of_two_contrary_options_the_later_one_holds(store_and_mountpoint, installed_helper):
    """As mount(8): `-o suid,nosuid` is nosuid and `-o nosuid,suid` suid (xfstests generic/128
    adds nosuid to MOUNT_OPTIONS' suid). mount(8) resolves them before it runs the helper; the
    helper run by hand (or by mount.fuse3 from an fstab line's options) handed the daemon both,
    which gave them to libfuse as a set: which one held depended on the daemon's hashing."""
    m = store_and_mountpoint
    for given, wanted in (("suid,nosuid,exec,noexec", {"nosuid", "noexec", "nodev"}),   # (nodev, nosuid:
                          ("nosuid,suid,noexec,exec", {"nodev"}),                      # a FUSE mount's
                          ("dev,nodev,ro,rw", {"nodev", "nosuid"}),                    # defaults)
                          ("nodev,dev,rw,ro", {"ro", "nosuid"})):
        result = run(str(installed_helper), str(m.store), str(m.path), "-o", given)
        assert result.returncode == 0, result.stderr
        m.pid = m.status()["pid"]
        options = set(mount_options(m.path)[1])
        assert options & {"nosuid", "noexec", "nodev", "ro"} == wanted, (given, options)
        unmount(m)


def test_mount_right_after_umount_waits_for_the_daemons_last_checkpoint(store_and_mountpoint):
    """umount(8) returns once the kernel lets the mount go, while the daemon still writes its
    final checkpoint holding the store: a mount at once (xfstests cycles mounts so) waited
    for nothing and failed with "in use by another process". The daemon is held stopped in
    its final checkpoint for a second, so that the mount surely comes while it works."""
    m = store_and_mountpoint
    data = os.urandom(32 * 2**20)             # buffered, not yet checkpointed: the last one is long
    result = run("mount", "-t", "fuse.slsfs", str(m.store), str(m.path), "-o", "checkpoint_interval=600000")
    assert result.returncode == 0, result.stderr
    m.pid = m.status()["pid"]
    (m.path / "big").write_bytes(data)
    result = run("umount", str(m.path))
    assert result.returncode == 0, result.stderr
    os.kill(m.pid, signal.SIGSTOP)
    try:
        again = subprocess.Popen(["mount", "-t", "fuse.slsfs", str(m.store), str(m.path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
    finally:
        os.kill(m.pid, signal.SIGCONT)
    _, errors = again.communicate(timeout=120)
    assert again.returncode == 0, errors
    m.pid = m.status()["pid"]
    assert (m.path / "big").read_bytes() == data
    unmount(m)


def test_remount_read_only_and_back(store_and_mountpoint):
    m = store_and_mountpoint
    result = run("mount", "-t", "fuse.slsfs", str(m.store), str(m.path), "-o", "volume=main")
    assert result.returncode == 0, result.stderr
    m.pid = m.status()["pid"]
    (m.path / "f").write_text("before")
    result = run("mount", "-o", "remount,ro", str(m.path))
    assert result.returncode == 0, result.stderr
    assert "ro" in mount_options(m.path)[1]
    with pytest.raises(OSError) as exc:
        (m.path / "g").write_text("refused")
    assert exc.value.errno == errno.EROFS
    assert (m.path / "f").read_text() == "before"
    result = run("mount", "-t", "fuse.slsfs", "-o", "remount,rw", str(m.store), str(m.path))
    assert result.returncode == 0, result.stderr
    (m.path / "g").write_text("after")
    assert m.status()["pid"] == m.pid          # the same daemon served throughout
    unmount(m)
