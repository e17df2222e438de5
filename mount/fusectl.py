"""The kernel's FUSE control file system (fusectl): for each connection, `waiting`
(requests queued or handed to a daemon and not answered yet) and `abort`.

Init systems mount it at /sys/fs/fuse/connections. Where nothing did, this module makes
an instance of its own that is never attached anywhere (fsopen + fsmount: a descriptor of
a detached mount), so no mount can be left behind, not even by a daemon killed while it
makes it. (A mount on a temporary directory detached right after was left mounted when
a crash test's SIGKILL fell between the two.)

Simplification: without root (no mount) and without a system mount, `waiting` reads 0
and `abort` does nothing.
"""
from __future__ import annotations

import ctypes
import os
import threading

SYSTEM_PATH = "/sys/fs/fuse/connections"
NR_FSOPEN, NR_FSCONFIG, NR_FSMOUNT = 430, 431, 432      # x86-64
FSOPEN_CLOEXEC, FSCONFIG_CMD_CREATE, FSMOUNT_CLOEXEC = 1, 6, 1
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
    context = _libc.syscall(NR_FSOPEN, b"fusectl", FSOPEN_CLOEXEC)
    if context < 0:
        return -1
    try:
        if _libc.syscall(NR_FSCONFIG, context, FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            return -1
        mount = _libc.syscall(NR_FSMOUNT, context, FSMOUNT_CLOEXEC, 0)
        return mount if mount >= 0 else -1
    finally:
        os.close(context)


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
