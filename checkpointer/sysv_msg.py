"""SysV message queues (msgget/msgsnd/msgrcv): captured whole in a process tree's own IPC
namespace (ipc_namespace.py), refused by name in the host's.

A queue lives in the IPC namespace, not in any process: a crash leaves it with the
messages sent after the checkpoint (and a reboot removes it), so a restored process
would read messages that do not match its memory (stress-ng --msg: "expected msg
containing N but received M").

In a namespace of the tree's own every queue is the tree's: `capture` takes each with
its id, key, mode, owner, byte limit (msg_qbytes) and messages, types and order kept
(msgrcv with MSG_COPY, which reads a message without taking it: CONFIG_CHECKPOINT_RESTORE),
and `make` sends them again into a queue of the same id in the restored namespace.
Simplifications there: the last sender and receiver (lspid, lrpid) and the times become
the restore's, the creator the restorer; a queue larger than the new namespace's msgmnb
raises it to the queue's size (the namespace's IPC sysctls are not captured).

In the host's namespace queues are shared with processes outside the tree: what is seen
of a queue's users is the last sender and the last receiver (/proc/sysvipc/msg lspid,
lrpid), and `refuse_used` refuses a checkpoint at which one of the frozen processes sent
to or received from a queue last, naming it. A queue whose last sender and receiver are
other processes goes unnoticed there (only those two PIDs are recorded by the kernel).
"""
from __future__ import annotations

import ctypes
import struct
from typing import Iterable

from . import sysv_ipc
from .errors import Unsupported
from .sysv_ipc import IPC_CREAT, IPC_EXCL, IPC_NOWAIT, check

MSG_COPY = 0o40000
MSQID_QBYTES_OFFSET = 88        # struct msqid_ds (x86-64): msg_qbytes
sysv_ipc.libc.msgrcv.restype = ctypes.c_ssize_t


def refuse_used(pids: Iterable[int]) -> None:
    """Raise Unsupported if one of `pids` (host PIDs) last sent to or received from a
    SysV message queue (of the host's IPC namespace)."""
    pids = set(pids)
    for row in sysv_ipc.table("msg"):
        user = next((pid for pid in (row["lspid"], row["lrpid"]) if pid in pids), None)
        if user is not None:
            raise Unsupported(f"process {user} uses the SysV message queue {row['msqid']} (key "
                              f"{sysv_ipc.key_text(row['key'])}, {row['qnum']} messages queued): slsfs does not "
                              "checkpoint message queues of the host's IPC namespace (after a restore its messages "
                              "would not match the process's memory); run it in an IPC namespace of its own (`sls "
                              "run`, or `unshare --ipc`), or use a pipe or a Unix socket instead")


def capture() -> list[dict]:
    """The message queues of this thread's IPC namespace, with their messages
    ([type, hex of the text], oldest first)."""
    queues = []
    for row in sysv_ipc.table("msg"):
        msqid = row["msqid"]
        qbytes = struct.unpack_from("Q", sysv_ipc.stat("msg", msqid), MSQID_QBYTES_OFFSET)[0]
        buffer = ctypes.create_string_buffer(8 + row["cbytes"])    # no message is longer than them all
        messages = []
        for index in range(row["qnum"]):
            size = sysv_ipc.libc.msgrcv(msqid, buffer, row["cbytes"], index, MSG_COPY | IPC_NOWAIT)
            check(size, f"msgrcv(MSG_COPY) of message {index} of SysV message queue {msqid}")
            messages.append([struct.unpack_from("q", buffer)[0], buffer.raw[8:8 + size].hex()])
        queues.append({"id": msqid, "key": row["key"], "mode": row["perms"] & 0o777, "uid": row["uid"],
                       "gid": row["gid"], "qbytes": qbytes, "messages": messages})
    return queues


def make(record: dict) -> None:
    """Make the queue of `record` again in this thread's IPC namespace, under its id, with
    its owner, byte limit and messages."""
    msqid, key = record["id"], record["key"]
    sysv_ipc.set_next_id("msg", msqid)
    made = sysv_ipc.libc.msgget(key, IPC_CREAT | IPC_EXCL | record["mode"])
    sysv_ipc.made_as("msg", msqid, made, key)
    _allow_queue_size(record["qbytes"])
    sysv_ipc.set_owner("msg", msqid, record["uid"], record["gid"], {MSQID_QBYTES_OFFSET: record["qbytes"]})
    for mtype, text in record["messages"]:
        data = bytes.fromhex(text)
        message = struct.pack("q", mtype) + data
        check(sysv_ipc.libc.msgsnd(msqid, message, len(data), IPC_NOWAIT),
              f"could not queue a message of type {mtype} ({len(data)} bytes) into SysV message queue {msqid} again")


def _allow_queue_size(qbytes: int) -> None:
    """Raise this thread's IPC namespace's kernel.msgmnb to `qbytes` if it is lower: a queue
    larger than msgmnb needs CAP_SYS_RESOURCE (which root may not have: not on this VM)
    unless the namespace allows it, as the checkpointed one must have when the queue was
    made that large without it (a new namespace starts at the kernel's default, 16384)."""
    with open("/proc/sys/kernel/msgmnb", "r+") as f:
        if int(f.read()) < qbytes:
            f.seek(0)
            f.write(str(qbytes))
