"""The kernel's FUSE control file system (fusectl): for each connection, `waiting`
(requests queued or handed to a daemon and not answered yet) and `abort`.

A connection is named by its mount's minor device number, which the kernel gives to the
next new mount (of any file system) as soon as the superblock is gone. So a mount is
aborted through `abort_mounted`, which holds the mount from the check that the number is
its to the abort: checking, then aborting by number, ended another mount (unmounted and
replaced between the two) under load.

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
import struct
import threading

SYSTEM_PATH = "/sys/fs/fuse/connections"
NR_FSOPEN, NR_FSCONFIG, NR_FSMOUNT = 430, 431, 432      # x86-64
FSOPEN_CLOEXEC, FSCONFIG_CMD_CREATE, FSMOUNT_CLOEXEC = 1, 6, 1
NR_STATX, AT_FDCWD, AT_EMPTY_PATH, AT_STATX_DONT_SYNC = 332, -100, 0x1000, 0x4000
STATX_SIZE, STATX_DEV_OFFSET = 256, 136      # struct statx; stx_dev_major, stx_dev_minor
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


def device_of(path: str, fd: int = AT_FDCWD) -> str | None:
    """"major:minor" of the file system holding `path` (relative to directory `fd`; "" for
    `fd` itself), from the kernel's cached attributes (statx AT_STATX_DONT_SYNC): a plain
    stat asks a FUSE mount's daemon once its cached attributes expire, and that daemon
    may be stopped, stuck or dead. None if there is no such file."""
    buffer = ctypes.create_string_buffer(STATX_SIZE)
    flags = AT_STATX_DONT_SYNC | (0 if path else AT_EMPTY_PATH)
    if _libc.syscall(NR_STATX, fd, os.fsencode(path), flags, 0, buffer) != 0:
        return None
    major, minor = struct.unpack_from("II", buffer.raw, STATX_DEV_OFFSET)
    return f"{major}:{minor}"


def abort_mounted(mountpoint: str, device: str) -> bool:
    """Abort the FUSE connection of the mount on top of `mountpoint` if that mount is device
    `device` ("major:minor"); whether it was. An O_PATH descriptor of the mount's root holds
    the mount, and with it its number, from the check to the abort (see the module
    docstring). Neither the open (O_PATH) nor the check sends its daemon a request."""
    try:
        fd = os.open(mountpoint, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if device_of("", fd) != device:
            return False
        abort(int(device.split(":")[1]))
        return True
    finally:
        os.close(fd)
