"""A mount made again on the device number it had before (a restore after a crash).

What: `taking(minor)` wraps the FUSE mount (FileSystem.serve): before it, superblocks of
tmpfs made with fsopen/fsconfig/fsmount and attached nowhere (no path, no mount table,
nothing another namespace could copy) take the free anonymous device numbers below
`minor`; the one that got `minor` lets it go last, so that the mount made next takes
it, the kernel giving a new superblock the lowest free number (fs/super.c:
get_anon_bdev); the others are closed once the mount is made.

Why: a FUSE mount's st_dev is the number its superblock got, and a daemon that died
leaves its number behind with its stale mount. The processes a restore brings back
remember (st_dev, st_ino) of the files they use: tar, finishing a directory it
extracted before the crash, found it "renamed before its status could be extracted";
rsync -x, find -xdev, du and SQLite's table of open files compare them too.

Simplifications: best effort. If `minor` is still held after FREE_WAIT_S (the stale
mount's superblock, which the mount namespaces of its dying processes keep a moment after
it was detached, not yet freed; or another file system took it since) or another process
takes a number between our letting go and the mount, the mount gets another number, as
it would without this, and we say so in the log. At most MAX_TAKEN numbers are held
meanwhile.
"""
from __future__ import annotations

import ctypes
import logging
import os
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

MAX_TAKEN = 64                  # free numbers below `minor` held at most while mounting
FREE_WAIT_S = 0.2               # how long a held `minor` is waited for (a stale superblock going away)
FREE_POLL_S = 0.01
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432     # x86-64
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_CMD_CREATE = 6
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(nr: int, *args) -> int:
    result = _libc.syscall(ctypes.c_long(nr), *args)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _superblock() -> int:
    """A new tmpfs superblock, attached nowhere: an O_PATH fd of its root (closing it frees
    the superblock and its device number)."""
    fs_fd = _syscall(_SYS_FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC)
    try:
        _syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0)
        return _syscall(_SYS_FSMOUNT, fs_fd, _FSMOUNT_CLOEXEC, 0)
    finally:
        os.close(fs_fd)


def hold_through(minor: int, wait_s: float = FREE_WAIT_S) -> list[int]:
    """Superblocks attached nowhere holding the free anonymous device numbers up to
    `minor`, the last one `minor` itself if it fell free within `wait_s` (tried again
    meanwhile: see FREE_WAIT_S); their fds, to close. At most MAX_TAKEN; OSError if no
    superblock can be made."""
    deadline = time.monotonic() + wait_s
    while True:
        held: list[int] = []
        got = 0                      # the number the last superblock made got
        try:
            while got < minor and len(held) < MAX_TAKEN:
                held.append(_superblock())
                got = os.minor(os.fstat(held[-1]).st_dev)
        except OSError:
            for fd in held:
                os.close(fd)
            raise
        if got <= minor or time.monotonic() > deadline:
            return held
        for fd in held:               # `minor` still held: the stale mount's superblock, kept a
            os.close(fd)              # moment by the mount namespaces of its dying processes?
        time.sleep(FREE_POLL_S)


@contextmanager
def taking(minor: int | None) -> Iterator[None]:
    """Around a mount that should get anonymous device 0:`minor` (None: no wish)."""
    if not minor:
        yield
        return
    try:
        held = hold_through(minor)
    except OSError as exc:
        log.info("cannot hold device numbers to mount on 0:%d again: %s", minor, exc)
        held = []
    try:
        if held and os.minor(os.fstat(held[-1]).st_dev) == minor:
            os.close(held.pop())     # the lowest free number now: the mount's
        else:
            log.info("device 0:%d is not free: the mount gets another number (restored processes "
                     "see another st_dev)", minor)
        yield
    finally:
        for fd in held:
            os.close(fd)
