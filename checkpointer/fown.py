"""Who gets an open file's O_ASYNC signals (F_SETOWN_EX, F_SETSIG): seen at checkpoint,
given again at restore.

What: `describe(pid, fd)` reads, for a file opened O_ASYNC, its owner (a process, a process
group or a thread, as process `pid` numbers it) and its signal (0: SIGIO), on our own dup of
the fd (the owner belongs to the open file description). `give(inj, fd, owner)` sets them
again from inside the restored process that holds `fd`. Why: a program that waits for
SIGIO (or the signal it chose) on a pipe or a socket got none after a restore.

Simplifications: only files opened O_ASYNC (F_SETOWN alone also directs a socket's SIGURG:
not kept); an owner that has exited, or is not visible from the holder's PID namespace, is
not kept; the owner's credentials, used for the permission to signal, are the restored
holder's at the time (root), not the original setter's.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct

from . import kernel, procfs
from .errors import ProcessGone

O_ASYNC = 0o20000
F_SETSIG, F_GETSIG, F_SETOWN_EX, F_GETOWN_EX = 10, 11, 15, 16
F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP = 0, 1, 2
_NR_FCNTL = 72


def describe(pid: int, fd: int) -> dict:
    """{"fown": [F_OWNER_* type, pid / pgid / tid as `pid` sees it, signal]} of fd `fd` of
    process `pid` (host PID), or {} when it has none we can keep."""
    ours = kernel.borrow_fd(pid, fd)
    try:
        kind, owner = struct.unpack("ii", fcntl.fcntl(ours, F_GETOWN_EX, bytes(8)))
        signal = fcntl.fcntl(ours, F_GETSIG)
    finally:
        os.close(ours)
    if owner <= 0:
        return {"fown": [F_OWNER_PID, 0, signal]} if signal else {}
    try:   # a group's id is its leader's pid
        owner = procfs.ns_id(procfs.status(owner)["NSpid"])
    except (ProcessGone, KeyError):
        return {}
    return {"fown": [kind, owner, signal]}


def give(inj, fd: int, owner: list[int], warnings: list[str], what: str) -> None:
    """Owner and signal of `owner` (from describe) to fd `fd` of the process of `inj`."""
    kind, pid, signal = owner
    if pid:
        result = inj.call(_NR_FCNTL, fd, F_SETOWN_EX, inj.put(struct.pack("ii", kind, pid)))
        if result < 0:
            warnings.append(f"{what}: its O_ASYNC signals went to {pid}, which could not be made its "
                            f"owner again ({errno.errorcode.get(-result, -result)}): they are not sent")
    if signal:
        inj.check(_NR_FCNTL, fd, F_SETSIG, signal, what=f"F_SETSIG on {what}")
