"""Permission checks (the kernel's default_permissions) as an unprivileged uid, with --allow-other."""
from __future__ import annotations

import ctypes
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


DIRECT_WRITE_PROBE = """
import mmap, os, sys
page = mmap.mmap(-1, 4096)
page.write(b"x" * 4096)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
os.pwrite(fd, page, 0)
os.close(fd)
print(repr("written"))      # no stat here: the writer's own stat would ask the daemon again
"""


@pytest.mark.parametrize("mode, after", [(0o6644, 0o2644), (0o6754, 0o0754)])
def test_a_direct_write_drops_set_id_bits_and_stat_shows_it(shared_mount, mode, after):
    """An unprivileged O_DIRECT write (xfstests generic/355) drops the set-user-ID bit, and
    the set-group-ID bit of a group-executable file; the daemon dropped them but the kernel
    kept showing the mode it held before the write."""
    path = shared_mount.path / "shared" / "setid"
    path.write_bytes(b"t" * 4096)             # the write changes no size (the kernel would ask again)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, mode)
    assert os.stat(path).st_mode & 0o7777 == mode
    assert probe_as_nobody(DIRECT_WRITE_PROBE, path) == "written"
    assert mode_by_statx(path) & 0o7777 == after
    assert os.stat(path).st_mode & 0o7777 == after


def mode_by_statx(path) -> int:
    """st_mode by statx(2) asking for the mode alone, as `stat -c %A` does: the kernel then
    answers from what it holds unless the mode itself was declared stale (os.stat asks for
    every field, so a stale size or mtime already makes it ask the daemon)."""
    AT_FDCWD, STATX_TYPE_MODE = -100, 0x3
    buf = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.statx(AT_FDCWD, os.fsencode(path), 0, STATX_TYPE_MODE, buf) == 0, ctypes.get_errno()
    return int.from_bytes(buf.raw[28:30], "little")         # struct statx's stx_mode
