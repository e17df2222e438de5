"""SysV shared memory (shmget/shmat): each segment is captured once, with its key, size,
mode and contents, and made again at restore under the same id (the ids the processes
keep in their memory stay right); every mapping of it is attached again at its address.

The id is chosen through /proc/sys/kernel/shm_next_id (the next shmget takes it). A
segment that still exists under that id with the same key and size (a crash does not
remove segments) is reused, its contents set back to the checkpoint's. A segment that
had been removed while attached (IPC_RMID: the usual way to have it vanish with its
users) is removed again once the restored processes have attached it.

Simplifications: the restored processes share the restorer's IPC namespace; a segment
is attached whole (a mapping of part of one is refused at checkpoint time); a segment
made again gets its owner and mode back, its creator becomes the restorer; a restore
whose segment is attached by running processes (another instance of the image, a clone's
original) is refused rather than overwrite their memory.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from .errors import CheckpointError, Unsupported

SHM_DEST = 0o1000                       # mode bit: removed, alive while attached
IPC_PRIVATE, IPC_CREAT, IPC_EXCL, IPC_RMID, IPC_SET, IPC_STAT = 0, 0o1000, 0o2000, 0, 1, 2
SHMID_DS_SIZE, PERM_UID_OFFSET = 112, 4     # struct shmid_ds (x86-64): shm_perm.uid, then .gid
SHM_RDONLY, SHM_REMAP = 0o10000, 0o40000
NR_SHMAT = 30
_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.shmdt.argtypes = [ctypes.c_void_p]


def segment(shmid: int) -> dict | None:
    """The segment `shmid` as /proc/sysvipc/shm describes it: key, size, mode (with
    SHM_DEST once removed), how many attach it, owner uid and gid, or None."""
    with open("/proc/sysvipc/shm") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1]) == shmid:
                return {"key": int(fields[0]), "mode": int(fields[2], 8), "size": int(fields[3]),
                        "attached": int(fields[6]), "uid": int(fields[7]), "gid": int(fields[8])}
    return None


def describe(shmid: int, mapping_size: int, source: str, what: str) -> dict:
    """What a restore needs of segment `shmid`, its contents read from `source` (a
    map_files entry of a mapping of it)."""
    info = segment(shmid)
    if info is None:
        raise Unsupported(f"{what}: SysV segment {shmid} is not in /proc/sysvipc/shm "
                          "(another IPC namespace?)")
    if mapping_size != -(-info["size"] // 4096) * 4096:
        raise Unsupported(f"{what}: only part of SysV segment {shmid} is mapped; only whole "
                          "segments can be checkpointed")
    with open(source, "rb") as f:
        data = f.read(info["size"])
    return {"shmid": shmid, "key": info["key"], "size": info["size"], "mode": info["mode"] & 0o777,
            "uid": info["uid"], "gid": info["gid"], "removed": bool(info["mode"] & SHM_DEST), "contents": data}


def make(record: dict, contents: bytes, warnings: list[str]) -> int:
    """Make (or take back) segment record["shmid"] with the checkpoint's contents. If its
    key now belongs to another segment (keys are often derived from inode numbers, which
    two file systems share), it is made without a key, with a warning: processes use a
    segment by id, a key only finds it."""
    shmid, key = record["shmid"], record["key"]
    existing = segment(shmid)
    if existing is not None:
        # (a private one of the same size is ours, made again keyless by an earlier restore)
        if existing["key"] not in (key, IPC_PRIVATE) or existing["size"] != record["size"]:
            raise CheckpointError(f"SysV segment id {shmid} is taken by another segment (key "
                                  f"{existing['key']:#x}); remove it (ipcrm -m {shmid}) and restore again")
        if existing["attached"]:    # setting its contents back would overwrite a live instance's
            raise CheckpointError(f"SysV segment {shmid} is in use by {existing['attached']} running "
                                  "process(es) (another instance of this image?): two copies cannot "
                                  "share it; stop that instance first")
    else:
        keyed = not record["removed"] and key != IPC_PRIVATE
        made = _create(shmid, key if keyed else IPC_PRIVATE, record)
        if made < 0 and keyed and ctypes.get_errno() == errno.EEXIST:
            warnings.append(f"SysV segment {shmid}: its key {key:#x} belongs to another segment now; "
                            "made again without a key")
            made = _create(shmid, IPC_PRIVATE, record)
        if made != shmid:
            err = ctypes.get_errno() if made < 0 else 0
            if made >= 0:
                _libc.shmctl(made, IPC_RMID, None)
            raise CheckpointError(f"could not make SysV segment {shmid} (key {key:#x}) again: "
                                  + (os.strerror(err) if err else f"the kernel gave id {made}"))
        if "uid" in record:                     # (older images: the restorer stays the owner)
            set_owner(shmid, record["uid"], record["gid"])
    address = _libc.shmat(shmid, None, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise CheckpointError(f"cannot attach SysV segment {shmid}: {os.strerror(ctypes.get_errno())}")
    try:
        ctypes.memmove(address, contents, len(contents))
    finally:
        _libc.shmdt(ctypes.c_void_p(address))
    return shmid


def set_owner(shmid: int, uid: int, gid: int) -> None:
    """IPC_SET of the segment's owner (its mode and creator unchanged)."""
    ds = ctypes.create_string_buffer(SHMID_DS_SIZE)
    if _libc.shmctl(shmid, IPC_STAT, ds) != 0:
        raise CheckpointError(f"cannot read SysV segment {shmid}: {os.strerror(ctypes.get_errno())}")
    struct.pack_into("II", ds, PERM_UID_OFFSET, uid, gid)
    if _libc.shmctl(shmid, IPC_SET, ds) != 0:
        raise CheckpointError(f"cannot give SysV segment {shmid} back to uid {uid}: "
                              f"{os.strerror(ctypes.get_errno())}")


def _create(shmid: int, key: int, record: dict) -> int:
    """shmget of a new segment that the kernel numbers `shmid` (shm_next_id)."""
    with open("/proc/sys/kernel/shm_next_id", "w") as f:
        f.write(str(shmid))
    return _libc.shmget(key, record["size"], IPC_CREAT | IPC_EXCL | record["mode"])


def remove(shmid: int) -> None:
    """IPC_RMID: the segment goes once its last user detaches (call it once the restored
    processes have attached it)."""
    _libc.shmctl(shmid, IPC_RMID, None)
