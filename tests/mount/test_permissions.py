"""Permission checks (the kernel's default_permissions) as an unprivileged uid, with --allow-other."""
from __future__ import annotations

import os

import pytest

from mount_helpers import NOBODY, probe_as_nobody


PROBE = r"""
import errno, os, sys
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
root = sys.argv[1]
results = {
    "read_private": attempt(lambda: open(os.path.join(root, "private")).read()),
    "read_public": attempt(lambda: open(os.path.join(root, "public")).read()),
    "write_public": attempt(lambda: open(os.path.join(root, "public"), "a").write("x")),
    "list_closed_dir": attempt(lambda: os.listdir(os.path.join(root, "closed"))),
    "create_in_root": attempt(lambda: open(os.path.join(root, "mine"), "w").close()),
    "create_in_shared": attempt(lambda: open(os.path.join(root, "shared", "mine"), "w").close()),
    "unlink_others_in_sticky": attempt(lambda: os.unlink(os.path.join(root, "shared", "roots"))),
    "chmod_others": attempt(lambda: os.chmod(os.path.join(root, "public"), 0o777)),
    "chown_own_to_root": attempt(lambda: os.chown(os.path.join(root, "shared", "mine"), 0, 0)),
    "own_file_uid": str(os.stat(os.path.join(root, "shared", "mine")).st_uid),
}
print(repr(results))
"""


@pytest.fixture
def shared_mount(new_mount):
    mnt = new_mount("--allow-other")
    os.chmod(mnt.path, 0o755)
    (mnt.path / "private").write_text("secret")
    os.chmod(mnt.path / "private", 0o600)
    (mnt.path / "public").write_text("hello")
    os.chmod(mnt.path / "public", 0o644)
    (mnt.path / "closed").mkdir(mode=0o700)
    (mnt.path / "shared").mkdir()
    os.chmod(mnt.path / "shared", 0o1777)
    (mnt.path / "shared" / "roots").write_text("root's")
    return mnt


def test_unprivileged_user_gets_posix_permissions(shared_mount):
    results = probe_as_nobody(PROBE, shared_mount.path)
    assert results == {
        "read_private": "EACCES",
        "read_public": "ok",
        "write_public": "EACCES",
        "list_closed_dir": "EACCES",
        "create_in_root": "EACCES",
        "create_in_shared": "ok",
        "unlink_others_in_sticky": "EPERM",
        "chmod_others": "EPERM",
        "chown_own_to_root": "EPERM",
        "own_file_uid": str(NOBODY),
    }
