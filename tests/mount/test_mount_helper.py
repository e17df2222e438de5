"""`mount -t fuse.slsfs` and fstab lines: the kernel's mount(8) -> mount.fuse3 -> `slsfs`.

mount.fuse3 runs the program named after "fuse." from a fixed PATH
(/usr/local/sbin:/usr/local/bin:/usr/sbin:...); the `installed_helper` fixture does what
`make install` does (links the venv's `slsfs` console script into /usr/local/sbin)
when that link is missing or points elsewhere, and leaves it in place: other test runs
may be using it at the same time.
"""
from __future__ import annotations

import os
import subprocess
import sys
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
