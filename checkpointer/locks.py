"""File locks held by a process: seen at checkpoint, taken again at restore.

What: `held(fdinfo)` lists the locks an fd's /proc fdinfo shows: flock() locks and OFD
locks of its open file description, and the process's POSIX (fcntl/lockf) record locks on
that file. `retake(inj, fd, locks, what)` takes them again from inside the restored
process (injected flock/fcntl calls, never waiting). Why: a database or a daemon relies on
its locks to keep other processes out (SQLite's write lock, a pid file's flock); after a
restore that believed it held a lock it no longer had, two processes would write at once.

Simplifications: leases are not kept; a lock that another process (outside the restored
tree) took meanwhile makes the restore fail, naming the file and the lock; a POSIX lock is
taken once per fd that shows it (the same owner taking the same range again changes
nothing).
"""
from __future__ import annotations

import errno
import re
import struct

from .errors import CheckpointError

_NR_FLOCK, _NR_FCNTL = 73, 72
F_SETLK, F_OFD_SETLK = 6, 37
F_RDLCK, F_WRLCK, SEEK_SET = 0, 1, 0
LOCK_SH, LOCK_EX, LOCK_NB = 1, 2, 4
_LINE = re.compile(r"^lock:\s*\d+:\s*(POSIX|FLOCK|OFDLCK)\s+\w+\s+(READ|WRITE)\s+\S+\s+\S+\s+(\d+)\s+(\d+|EOF)\s*$",
                   re.MULTILINE)


def held(fdinfo: str) -> list[list]:
    """[[kind ("POSIX", "FLOCK" or "OFDLCK"), "READ" or "WRITE", first byte, last byte (-1: to
    the end of the file, as it grows)], ...] of an fdinfo text."""
    return [[m[1], m[2], int(m[3]), -1 if m[4] == "EOF" else int(m[4])] for m in _LINE.finditer(fdinfo)]


def retake(inj, fd: int, locks: list[list], what: str) -> None:
    """Take `locks` (from `held`) on the restored process's `fd` (`inj`: its injector)."""
    for kind, access, first, last in locks:
        if kind == "FLOCK":
            result = inj.call(_NR_FLOCK, fd, (LOCK_SH if access == "READ" else LOCK_EX) | LOCK_NB)
        else:
            length = 0 if last < 0 else last - first + 1
            request = struct.pack("hhqqi4x", F_RDLCK if access == "READ" else F_WRLCK, SEEK_SET, first, length, 0)
            result = inj.call(_NR_FCNTL, fd, F_SETLK if kind == "POSIX" else F_OFD_SETLK, inj.put(request))
        if result < 0:
            where = "the whole file" if kind == "FLOCK" else \
                f"bytes {first}-{'end' if last < 0 else last}"
            held_elsewhere = -result in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
            raise CheckpointError(f"cannot take back the {access.lower()} {kind} lock on {what} ({where}): "
                                  + ("another process holds it now; stop it first" if held_elsewhere
                                     else errno.errorcode.get(-result, str(-result))))
