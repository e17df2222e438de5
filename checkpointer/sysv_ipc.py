"""What SysV semaphores, message queues and shared memory have in common: the kernel's
table of each kind (/proc/sysvipc/<kind>), the id the next object of a kind gets
(/proc/sys/kernel/<kind>_next_id) and IPC_STAT/IPC_SET of an object's owner.

Every one of these reads and writes the IPC namespace of the calling THREAD (the kernel
looks at current->nsproxy): ipc_namespace.entered() puts a thread in a group's namespace.
"""
from __future__ import annotations

import ctypes
import os
import struct

from . import procfs
from .errors import CheckpointError

IPC_PRIVATE, IPC_CREAT, IPC_EXCL, IPC_NOWAIT = 0, 0o1000, 0o2000, 0o4000
IPC_RMID, IPC_SET, IPC_STAT = 0, 1, 2
# struct semid_ds/msqid_ds/shmid_ds (x86-64) all start with struct ipc_perm: uid at 4, gid at 8
DS_SIZE, PERM_UID_OFFSET = 128, 4
libc = ctypes.CDLL(None, use_errno=True)


def key_text(key: int) -> str:
    """A key as ipcs shows it (/proc/sysvipc prints key_t signed: -0x7dffedbd is 0x82001243)."""
    return f"{key & 0xFFFFFFFF:#010x}"


def table(kind: str) -> list[dict[str, int]]:
    """The objects of `kind` ("sem", "msg" or "shm") in the calling thread's IPC namespace,
    one dict per /proc/sysvipc/<kind> line by its column names (perms in octal)."""
    try:
        lines = procfs.read_file(f"/proc/sysvipc/{kind}").decode().splitlines()  # read in the stop: no buffered open()
    except FileNotFoundError:           # a kernel without SysV IPC
        return []
    names = lines[0].split()
    return [{name: int(value, 8 if name == "perms" else 10) for name, value in zip(names, line.split())}
            for line in lines[1:]]


def set_next_id(kind: str, ident: int) -> None:
    """The next object of `kind` made in this thread's IPC namespace gets id `ident`."""
    with open(f"/proc/sys/kernel/{kind}_next_id", "w") as f:
        f.write(str(ident))


def ctl(kind: str, ident: int, command: int, buffer: object = None) -> int:
    """semctl/msgctl/shmctl(ident, command, buffer)."""
    if kind == "sem":
        return libc.semctl(ident, 0, command, buffer)
    return getattr(libc, f"{kind}ctl")(ident, command, buffer)


def check(result: int, what: str) -> int:
    """`result` of a libc call, or a CheckpointError naming `what` and errno."""
    if result < 0:
        raise CheckpointError(f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def stat(kind: str, ident: int) -> ctypes.Array:
    """IPC_STAT of object `ident` of `kind` (struct <kind>id_ds)."""
    ds = ctypes.create_string_buffer(DS_SIZE)
    check(ctl(kind, ident, IPC_STAT, ds), f"cannot read SysV {kind} {ident}")
    return ds


def set_owner(kind: str, ident: int, uid: int, gid: int, fields: dict[int, int] | None = None) -> None:
    """IPC_SET of the owner of object `ident` of `kind` (its mode and creator unchanged),
    and of the u64 `fields` of its struct by offset (a queue's msg_qbytes)."""
    ds = stat(kind, ident)
    struct.pack_into("II", ds, PERM_UID_OFFSET, uid, gid)
    for offset, value in (fields or {}).items():
        struct.pack_into("Q", ds, offset, value)
    check(ctl(kind, ident, IPC_SET, ds), f"cannot give SysV {kind} {ident} back to uid {uid}")


def remove(kind: str, ident: int) -> None:
    """IPC_RMID of object `ident` of `kind` (errors ignored: it may be gone)."""
    ctl(kind, ident, IPC_RMID)


def made_as(kind: str, ident: int, made: int, key: int) -> None:
    """Check that an object the kernel made (`made`, or -1) got the id `ident` we set;
    else remove it and raise a CheckpointError."""
    if made == ident:
        return
    err = ctypes.get_errno() if made < 0 else 0
    if made >= 0:
        remove(kind, made)
    raise CheckpointError(f"could not make SysV {kind} {ident} (key {key_text(key)}) again: "
                          + (os.strerror(err) if err else f"the kernel gave id {made}"))
