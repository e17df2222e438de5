"""A mount that cannot open /dev/fuse says why and what to do (libfuse alone says
"fuse_session_mount failed"): the device missing, or not open to the user (mode 0600,
where udev would make it 0666)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mount import filesystem
from mount.daemon import sole_exception
from mount.filesystem import MountError, check_fuse_device

NOBODY = 65534


def _as_nobody(call) -> str:
    """What `call()` raises (its message) or "ok", run in a forked child as uid NOBODY
    (forked: the modules are imported already, the venv may be where nobody can go)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            call()
            said = "ok"
        except BaseException as exc:          # noqa: BLE001 (reported to the parent)
            said = f"{type(exc).__name__}: {exc}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    return said


@pytest.fixture
def open_dir():
    """A directory everyone may enter (pytest's tmp_path is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="slsfs-test-fuse-device-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_device_the_user_cannot_open_is_named_with_its_mode_and_the_fix(open_dir, monkeypatch):
    device = open_dir / "fuse"
    device.write_bytes(b"")
    device.chmod(0o600)
    monkeypatch.setattr(filesystem, "FUSE_DEVICE", str(device))
    said = _as_nobody(check_fuse_device)
    assert said.startswith("MountError: ") and f"uid {NOBODY}" in said and "mode 0600" in said, said
    assert "chmod 0666" in said, said
    device.chmod(0o666)
    assert _as_nobody(check_fuse_device) == "ok"


def test_a_missing_device_says_to_load_the_module(tmp_path, monkeypatch):
    monkeypatch.setattr(filesystem, "FUSE_DEVICE", str(tmp_path / "nothing"))
    with pytest.raises(MountError, match="modprobe fuse"):
        check_fuse_device()


def test_a_failure_inside_trio_nurseries_is_reported_as_itself():
    failure = RuntimeError("fuse_session_mount failed")
    wrapped = ExceptionGroup("outer", [ExceptionGroup("inner", [failure])])
    assert sole_exception(wrapped) is failure
    two = ExceptionGroup("two", [failure, ValueError("other")])
    assert sole_exception(two) is two
