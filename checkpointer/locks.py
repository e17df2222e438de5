"""File locks and leases held by a process: seen at checkpoint, taken again at restore.

What: `held(fdinfo)` lists the locks an fd's /proc fdinfo shows: flock() locks and OFD
locks of its open file description, the process's POSIX (fcntl/lockf) record locks on
that file, and the lease (F_SETLEASE) of its open file description. `retake(inj, fd,
locks, what)` takes them again from inside the restored process (injected flock/fcntl
calls, never waiting). Why: a database or a daemon relies on its locks to keep other
processes out (SQLite's write lock, a pid file's flock); after a restore that believed it
held a lock it no longer had, two processes would write at once.

Simplifications: a lease being broken (another process opened the file meanwhile) is
kept as the lease it is being broken to (none, or a read lease); a read lease on a file
open for writing (its holder's own fd, say), which the kernel grants only as a write lease
broken to read, is taken as a write lease and broken again to read by an open of the
restorer's (with no owner for the moment: no break signal reaches the process, which had
had it already; the owner is then the holder, as F_SETLEASE makes it): it stays breaking
until the kernel's lease-break-time, where the original may have been done with it; a lock that another
process (outside the restored tree) took meanwhile makes the restore fail, naming the
file and the lock; a POSIX lock is taken once per fd that shows it (the same owner taking
the same range again changes nothing).
"""
from __future__ import annotations

import errno
import os
import re
import struct

from .errors import CheckpointError

_NR_FLOCK, _NR_FCNTL, _NR_GETPID = 73, 72, 39
F_SETLK, F_SETOWN, F_OFD_SETLK, F_SETLEASE = 6, 8, 37, 1024
F_RDLCK, F_WRLCK, SEEK_SET = 0, 1, 0
LOCK_SH, LOCK_EX, LOCK_NB = 1, 2, 4
_LINE = re.compile(r"^lock:\s*\d+:\s*(POSIX|FLOCK|OFDLCK)\s+\w+\s+(READ|WRITE)\s+\S+\s+\S+\s+(\d+)\s+(\d+|EOF)\s*$",
                   re.MULTILINE)
# a lease: ACTIVE with its type, or BREAKING with the type it is being broken to
_LEASE = re.compile(r"^lock:\s*\d+:\s*LEASE\s+(?:ACTIVE|BREAKING)\s+(READ|WRITE)\s", re.MULTILINE)
_ANY_LEASE = re.compile(r"^lock:\s*\d+:\s*LEASE\s", re.MULTILINE)


def leased(fdinfo: str) -> bool:
    """Whether an fdinfo text shows a lease, active or being broken (to none too, which
    `held` leaves out): an open of the file would wait for its break (lease-break-time)."""
    return _ANY_LEASE.search(fdinfo) is not None


def held(fdinfo: str) -> list[list]:
    """[[kind ("POSIX", "FLOCK", "OFDLCK" or "LEASE"), "READ" or "WRITE", first byte, last byte
    (-1: to the end of the file, as it grows; a lease is the whole file: 0, -1)], ...] of an
    fdinfo text."""
    return ([[m[1], m[2], int(m[3]), -1 if m[4] == "EOF" else int(m[4])] for m in _LINE.finditer(fdinfo)]
            + [["LEASE", m[1], 0, -1] for m in _LEASE.finditer(fdinfo)])


def _broken_to_read(inj, fd: int) -> int:
    """A read lease on `fd` of the process of `inj` whose file is open for writing: a write
    lease, broken to read by our open of it (O_NONBLOCK: EWOULDBLOCK, the break begun),
    while the file has no owner to signal. 0, or the write lease's -errno."""
    result = inj.call(_NR_FCNTL, fd, F_SETLEASE, F_WRLCK)
    if result < 0:
        return result
    inj.check(_NR_FCNTL, fd, F_SETOWN, 0, what="F_SETOWN")
    try:
        os.close(os.open(f"/proc/{inj.tid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except BlockingIOError:
        pass
    own_pid = inj.check(_NR_GETPID, what="getpid")
    inj.check(_NR_FCNTL, fd, F_SETOWN, own_pid, what="F_SETOWN")
    return 0


def retake(inj, fd: int, locks: list[list], what: str, warnings: list[str] | None = None) -> None:
    """Take `locks` (from `held`) on the restored process's `fd` (`inj`: its injector).
    With `warnings`, a lease that cannot be taken (the file is open elsewhere now) is named
    there instead: its holder goes on as after a lease break, without it."""
    for kind, access, first, last in locks:
        if kind == "FLOCK":
            result = inj.call(_NR_FLOCK, fd, (LOCK_SH if access == "READ" else LOCK_EX) | LOCK_NB)
        elif kind == "LEASE":
            result = inj.call(_NR_FCNTL, fd, F_SETLEASE, F_RDLCK if access == "READ" else F_WRLCK)
            if result == -errno.EAGAIN and access == "READ":
                result = _broken_to_read(inj, fd)
        else:
            length = 0 if last < 0 else last - first + 1
            request = struct.pack("hhqqi4x", F_RDLCK if access == "READ" else F_WRLCK, SEEK_SET, first, length, 0)
            result = inj.call(_NR_FCNTL, fd, F_SETLK if kind == "POSIX" else F_OFD_SETLK, inj.put(request))
        if result < 0 and kind == "LEASE" and warnings is not None:
            warnings.append(f"the {access.lower()} lease on {what} could not be taken back "
                            f"({errno.errorcode.get(-result, -result)}: the file is open elsewhere): it is gone")
            continue
        if result < 0:
            where = "the whole file" if kind in ("FLOCK", "LEASE") else \
                f"bytes {first}-{'end' if last < 0 else last}"
            held_elsewhere = -result in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
            raise CheckpointError(f"cannot take back the {access.lower()} {kind} lock on {what} ({where}): "
                                  + (("another process has the file open now" if kind == "LEASE" else
                                      "another process holds it now") + "; stop it first" if held_elsewhere
                                     else errno.errorcode.get(-result, str(-result))))
