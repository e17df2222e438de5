"""The kernel's FUSE control file system (fusectl): for each connection, `waiting`
(requests queued or handed to a daemon and not answered yet) and `abort`.

Init systems mount it at /sys/fs/fuse/connections. Where nothing did, this module mounts
an instance of its own on a temporary directory, keeps a descriptor of its root and
detaches the mount at once: the files stay reachable through the descriptor, and no
mount is left behind, not even by a daemon that is killed.

Simplification: without root (no mount) and without a system mount, `waiting` reads 0
and `abort` does nothing.
"""
from __future__ import annotations

import ctypes
import os
import tempfile
import threading

SYSTEM_PATH = "/sys/fs/fuse/connections"
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_root: int | None = None        # descriptor of the fusectl root; -1: not available


def _root_fd() -> int:
    global _root
    with _lock:
        if _root is None:
            _root = _open_root()
        return _root


def _open_root() -> int:
    if os.path.ismount(SYSTEM_PATH):
        return os.open(SYSTEM_PATH, os.O_RDONLY | os.O_DIRECTORY)
    where = tempfile.mkdtemp(prefix="slsfs-fusectl-")
    try:
        if _libc.mount(b"fusectl", where.encode(), b"fusectl", 0, None) != 0:
            return -1
        try:
            return os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        finally:
            _libc.umount2(where.encode(), MNT_DETACH)
    finally:
        os.rmdir(where)


def waiting(connection: int) -> int:
    """Requests of FUSE connection `connection` (the mount's minor device number) not
    answered yet; 0 if it is gone or fusectl is not available."""
    root = _root_fd()
    try:
        fd = os.open(f"{connection}/waiting", os.O_RDONLY, dir_fd=root)
    except OSError:
        return 0
    try:
        return int(os.read(fd, 32) or 0)
    except ValueError:
        return 0
    finally:
        os.close(fd)


def abort(connection: int) -> None:
    """End every request still open on FUSE connection `connection`, if it exists."""
    root = _root_fd()
    try:
        fd = os.open(f"{connection}/abort", os.O_WRONLY, dir_fd=root)
    except OSError:
        return
    try:
        os.write(fd, b"1")
    except OSError:
        pass
    finally:
        os.close(fd)
