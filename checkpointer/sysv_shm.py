"""SysV shared memory (shmget/shmat): each segment is captured once, with its key, size,
mode and contents, and made again at restore under the same id (the ids the processes
keep in their memory stay right); every mapping of it is attached again at its address.

The id is chosen through /proc/sys/kernel/shm_next_id (the next shmget takes it). A
segment that still exists under that id with the same key and size (a crash does not
remove segments) is reused, its contents set back to the checkpoint's. A segment that
had been removed while attached (IPC_RMID: the usual way to have it vanish with its
users) is removed again once the restored processes have attached it.

A process tree in an IPC namespace of its own (ipc_namespace.py) is restored into a new
one, where every segment is made afresh; segments no process of the tree maps are
captured too (`unattached`), read through an attachment of our own.

Simplifications: a tree in the host's IPC namespace is restored in the restorer's; a mapping
of part of a segment (mprotect of some pages splits one attachment in several mappings) is
attached whole then moved (builder.ProcessBuilder._attach_segment); a segment
made again gets its owner and mode back, its creator becomes the restorer; a restore
whose segment is attached by running processes (another instance of the image, a clone's
original) is refused rather than overwrite their memory.
"""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Callable

from . import sysv_ipc
from .errors import CheckpointError, Unsupported
from .sysv_ipc import IPC_CREAT, IPC_EXCL, IPC_PRIVATE

SHM_DEST = 0o1000                       # mode bit: removed, alive while attached
SHM_RDONLY, SHM_REMAP = 0o10000, 0o40000
NR_SHMAT = 30
_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.shmdt.argtypes = [ctypes.c_void_p]


def segment(shmid: int) -> dict | None:
    """The segment `shmid` as /proc/sysvipc/shm describes it: key, size, mode (with
    SHM_DEST once removed), how many attach it, owner uid and gid, or None."""
    for row in sysv_ipc.table("shm"):
        if row["shmid"] == shmid:
            return {"key": row["key"], "mode": row["perms"], "size": row["size"], "attached": row["nattch"],
                    "uid": row["uid"], "gid": row["gid"]}
    return None


def describe(shmid: int, source: str, what: str) -> dict:
    """What a restore needs of segment `shmid`, its contents read from `source` (a
    map_files entry of a mapping of it, or of part of it: the file is the whole segment)."""
    info = segment(shmid)
    if info is None:
        raise Unsupported(f"{what}: SysV segment {shmid} is not in /proc/sysvipc/shm "
                          "(another IPC namespace?)")
    with open(source, "rb") as f:
        data = f.read(info["size"])
    return {**_record(shmid, info), "contents": data}


def _record(shmid: int, info: dict) -> dict:
    return {"shmid": shmid, "key": info["key"], "size": info["size"], "mode": info["mode"] & 0o777,
            "uid": info["uid"], "gid": info["gid"], "removed": bool(info["mode"] & SHM_DEST)}


def unattached(recorded: set[int], put_blob: Callable[[bytes], list[str]]) -> list[dict]:
    """The segments of this thread's IPC namespace that are not among `recorded` (those
    the processes map), each read through an attachment of ours, its contents handed to
    `put_blob` (its record's "data": the blob's ids)."""
    records = []
    for row in sysv_ipc.table("shm"):
        shmid = row["shmid"]
        if shmid in recorded:
            continue
        address = _libc.shmat(shmid, None, SHM_RDONLY)
        if address in (None, ctypes.c_void_p(-1).value):
            raise CheckpointError(f"cannot read SysV segment {shmid}: {os.strerror(ctypes.get_errno())}")
        try:
            contents = ctypes.string_at(address, row["size"])
        finally:
            _libc.shmdt(ctypes.c_void_p(address))
        records.append({**_record(shmid, {**row, "mode": row["perms"]}), "data": put_blob(contents)})
    return records


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
                                  f"{sysv_ipc.key_text(existing['key'])}); remove it (ipcrm -m {shmid}) and "
                                  "restore again")
        if existing["attached"]:    # setting its contents back would overwrite a live instance's
            raise CheckpointError(f"SysV segment {shmid} is in use by {existing['attached']} running "
                                  "process(es) (another instance of this image?): two copies cannot "
                                  "share it; stop that instance first")
    else:
        keyed = not record["removed"] and key != IPC_PRIVATE
        made = _create(shmid, key if keyed else IPC_PRIVATE, record)
        if made < 0 and keyed and ctypes.get_errno() == errno.EEXIST:
            warnings.append(f"SysV segment {shmid}: its key {sysv_ipc.key_text(key)} belongs to another segment now; "
                            "made again without a key")
            made = _create(shmid, IPC_PRIVATE, record)
        sysv_ipc.made_as("shm", shmid, made, key)
        if "uid" in record:                     # (older images: the restorer stays the owner)
            sysv_ipc.set_owner("shm", shmid, record["uid"], record["gid"])
    address = _libc.shmat(shmid, None, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise CheckpointError(f"cannot attach SysV segment {shmid}: {os.strerror(ctypes.get_errno())}")
    try:
        ctypes.memmove(address, contents, len(contents))
    finally:
        _libc.shmdt(ctypes.c_void_p(address))
    return shmid


def _create(shmid: int, key: int, record: dict) -> int:
    """shmget of a new segment that the kernel numbers `shmid` (shm_next_id)."""
    sysv_ipc.set_next_id("shm", shmid)
    return _libc.shmget(key, record["size"], IPC_CREAT | IPC_EXCL | record["mode"])


def remove(shmid: int) -> None:
    """IPC_RMID: the segment goes once its last user detaches (call it once the restored
    processes have attached it)."""
    sysv_ipc.remove("shm", shmid)
