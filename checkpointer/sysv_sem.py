"""SysV semaphore sets (semget/semop) of a process tree's own IPC namespace: captured
with their ids, keys, modes, owners and values, made again under the same ids in the
restored namespace (ipc_namespace.py).

Why: a set lives in the IPC namespace, not in a process. Shared with the host, it
outlives a crash with the values of AFTER the checkpoint (PostgreSQL's, say: silently
inconsistent with the restored memory) and a reboot removes it. In a namespace of the
group's own, it is the group's state, taken inside the stop like its memory.

Simplifications: sempid (GETPID: the last process to operate on each semaphore) becomes
the restorer, otime and ctime the restore's time, the creator (cuid, cgid) the
restorer; SEM_UNDO adjustments (the kernel's per-process undo lists, which /proc does
not show) are not captured: a restored process that exits undoes nothing it did before
the checkpoint. A process blocked in semop at the checkpoint waits again after the
restore (it saw EINTR at the freeze, see README); the waiter counts (GETNCNT, GETZCNT)
follow from that.
"""
from __future__ import annotations

import ctypes

from . import sysv_ipc
from .sysv_ipc import IPC_CREAT, IPC_EXCL, check

GETALL, SETALL = 13, 17


def capture() -> list[dict]:
    """The semaphore sets of this thread's IPC namespace."""
    sets = []
    for row in sysv_ipc.table("sem"):
        semid, count = row["semid"], row["nsems"]
        values = (ctypes.c_ushort * count)()
        check(sysv_ipc.ctl("sem", semid, GETALL, values), f"semctl GETALL of SysV semaphore set {semid}")
        sets.append({"id": semid, "key": row["key"], "mode": row["perms"] & 0o777, "uid": row["uid"],
                     "gid": row["gid"], "values": list(values)})
    return sets


def make(record: dict) -> None:
    """Make the set of `record` again in this thread's IPC namespace, under its id, with
    its values and owner."""
    semid, key = record["id"], record["key"]
    sysv_ipc.set_next_id("sem", semid)
    made = sysv_ipc.libc.semget(key, len(record["values"]), IPC_CREAT | IPC_EXCL | record["mode"])
    sysv_ipc.made_as("sem", semid, made, key)
    values = (ctypes.c_ushort * len(record["values"]))(*record["values"])
    check(sysv_ipc.ctl("sem", semid, SETALL, values), f"semctl SETALL of SysV semaphore set {semid}")
    sysv_ipc.set_owner("sem", semid, record["uid"], record["gid"])
