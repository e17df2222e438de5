"""userfaultfd plumbing shared by write tracking (incremental.py: write-protect mode) and
lazy restore (lazy.py: missing-page mode): ioctl request numbers, an ioctl that raises a
CheckpointError carrying errno, and a userfaultfd made inside a stopped process and
taken from it (a userfaultfd acts on the memory of the process that created it)."""
from __future__ import annotations

import ctypes
import os

from . import kernel
from .errors import CheckpointError
from .inject import Injector

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_NR_USERFAULTFD, _NR_PIDFD_OPEN, _NR_PIDFD_GETFD = 323, 434, 438
O_CLOEXEC, O_NONBLOCK = 0o2000000, 0o4000
UFFD_USER_MODE_ONLY = 1


def iowr(kind: int, nr: int, size: int) -> int:
    """_IOWR(kind, nr, size)."""
    return (3 << 30) | (size << 16) | (kind << 8) | nr


UFFD_API = 0xAA
UFFDIO_API = iowr(0xAA, 0x3F, 24)
UFFDIO_REGISTER = iowr(0xAA, 0x00, 32)


def ioctl(fd: int, request: int, buf: ctypes.Array, what: str) -> int:
    """ioctl(fd, request, buf); a CheckpointError naming `what` (with .errno) on failure."""
    result = _libc.ioctl(fd, request, ctypes.addressof(buf))
    if result < 0:
        err = ctypes.get_errno()
        exc = CheckpointError(f"{what} failed: {os.strerror(err)}")
        exc.errno = err
        raise exc
    return result


def raw_ioctl(fd: int, request: int, buf: ctypes.Array) -> int:
    """ioctl without a check (for calls whose failure is expected and harmless)."""
    return _libc.ioctl(fd, request, ctypes.addressof(buf))


def take_from(inj: Injector, pid: int, what: str, *, user_mode_only: bool = False) -> int:
    """A userfaultfd made inside process `pid` (through `inj`, one of its stopped
    threads), as a descriptor of ours; the process keeps none. `user_mode_only`: what a
    process without CAP_SYS_PTRACE may make (vm.unprivileged_userfaultfd=0); faults the
    kernel takes on its behalf are then not reported (harmless for asynchronous
    write-protection, whose faults the kernel resolves itself)."""
    flags = O_CLOEXEC | O_NONBLOCK | (UFFD_USER_MODE_ONLY if user_mode_only else 0)
    remote = inj.check(_NR_USERFAULTFD, flags, what=f"userfaultfd ({what})")
    pidfd = kernel.syscall(_NR_PIDFD_OPEN, pid, 0)
    try:
        return kernel.syscall(_NR_PIDFD_GETFD, pidfd, remote, 0)
    finally:
        os.close(pidfd)
        inj.check(kernel.NR["close"], remote, what="close (userfaultfd)")
