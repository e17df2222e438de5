"""POSIX ACLs are not supported: setting one is refused (EOPNOTSUPP) instead of being
stored as a plain xattr that would neither set the mode nor be enforced, so that
`cp -a`, tar and rsync fall back to chmod and copies keep their modes."""
from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess

import pytest

ACL_XATTR_VERSION = 2
USER_OBJ, GROUP_OBJ, OTHER = 0x01, 0x04, 0x20
NO_ID = 0xFFFFFFFF


def minimal_acl(mode: int) -> bytes:
    """The ACL equivalent to permission bits `mode` (what cp -a sets on a plain file)."""
    entries = [(USER_OBJ, (mode >> 6) & 7), (GROUP_OBJ, (mode >> 3) & 7), (OTHER, mode & 7)]
    return struct.pack("<I", ACL_XATTR_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, NO_ID) for tag, perm in entries)


@pytest.mark.parametrize("name", ["system.posix_acl_access", "system.posix_acl_default"])
def test_setting_an_acl_is_refused(mnt, name):
    target = mnt.path / "d"
    target.mkdir()
    with pytest.raises(OSError) as raised:
        os.setxattr(target, name, minimal_acl(0o755))
    assert raised.value.errno == errno.EOPNOTSUPP
    assert name not in os.listxattr(target)


def test_cp_a_keeps_modes(mnt, tmp_path):
    source = tmp_path / "tree"
    (source / "sub").mkdir(parents=True)
    for path, mode in ((source / "readable", 0o644), (source / "sub" / "script", 0o755),
                       (source / "secret", 0o600)):
        path.write_text(path.name)
        path.chmod(mode)
    subprocess.run(["cp", "-a", str(source), str(mnt.path / "copy")], check=True)
    for original in source.rglob("*"):
        copy = mnt.path / "copy" / original.relative_to(source)
        assert oct(copy.stat().st_mode) == oct(original.stat().st_mode), copy
    shutil.rmtree(mnt.path / "copy")
