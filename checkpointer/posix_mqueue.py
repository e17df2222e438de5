"""POSIX message queues (mq_open) that the processes of an image hold open: captured with
their size limits, owner, mode and queued messages (priorities and order kept), made again
at restore under the same name before the processes open them again.

What: `capture(path, name)` reads a queue through `path` (a /proc/PID/fd link of it):
a record of kind "mqueue" (docs/FORMAT.md, image version 24); the descriptors are
"mqueue_fd" records naming it (files.py). `make(record, blobs)` at restore gives the
restorer's IPC namespace (the restored group's, ipc_namespace.py) that queue: made anew,
or, if a queue of that name is there (the host's namespace: the killed original's queue
outlives it), set back to the checkpoint's messages, owner and mode; `open_in(inj, name,
flags)` is the process's own descriptor, by an injected mq_open. A queue that had been
unlinked is made under a name of its own and unlinked again once the processes hold it
(`unlink`).
Why: a queue lives in the IPC namespace, not in a process (like a SysV queue, sysv_msg.py):
a group's namespace is its own, so its queues are its state, gone after a crash or a
reboot; services that talk through them (mq_send/mq_receive) were refused at checkpoint.
How: the kernel shows no queue's messages without taking them: the capture opens a new
description of it (O_RDWR | O_NONBLOCK through the /proc link), receives every message
(highest priority first, in order within one) and sends them back at once in that order,
which rebuilds the same queue; its processes are frozen meanwhile.
Simplifications: a queue no process holds open is not captured (nothing leads to it: it is
gone after a restore into a new namespace); one with a notification registered (mq_notify)
is refused; a process outside the image using a queue of the host's namespace during the
capture may see it empty for a moment, and its messages may be reordered; a queue of the
host's namespace that running processes hold open is refused at restore (setting it back
would take their messages); its times are the restore's.
"""
from __future__ import annotations

import ctypes
import os
import re
import struct
from typing import Callable

from . import kernel
from .errors import CheckpointError, Unsupported

NR_MQ_OPEN, NR_MQ_UNLINK, NR_MQ_TIMEDSEND, NR_MQ_TIMEDRECEIVE, NR_MQ_GETSETATTR = 240, 241, 242, 243, 245
ATTR = struct.Struct("4q32x")   # struct mq_attr: mq_flags, mq_maxmsg, mq_msgsize, mq_curmsgs, 4 reserved
O_ACCMODE, O_RDWR, O_CREAT, O_EXCL, O_NONBLOCK, O_CLOEXEC = 0o3, 0o2, 0o100, 0o200, 0o4000, 0o2000000
DELETED = " (deleted)"
_NOTIFY = re.compile(rb"NOTIFY_PID:(\d+)")


def capture(path: str, name: str, put_blob: Callable[[bytes], list[str]]) -> dict:
    """The record of the queue that `path` leads to (`name`: as /proc shows it, "/NAME",
    " (deleted)" after an unlink). Raises Unsupported (a notification is registered),
    OSError."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if (match := _NOTIFY.search(os.pread(fd, 256, 0))) and int(match[1]):
            raise Unsupported(f"the POSIX message queue {name} has a notification registered (mq_notify, by "
                              f"process {match[1]}), which cannot be checkpointed yet")
        _, maxmsg, msgsize, _ = _attributes(fd)
        messages = _take_all(fd, msgsize)
        for priority, data in messages:
            _send(fd, data, priority)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return {"kind": "mqueue", "name": name.removesuffix(DELETED), "unlinked": name.endswith(DELETED),
            "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "maxmsg": maxmsg, "msgsize": msgsize,
            "messages": [[priority, put_blob(data)] for priority, data in messages]}


def make(record: dict, read_blob: Callable[[list[str]], bytes]) -> str:
    """Give the calling thread's IPC namespace the queue of `record`, with its messages,
    owner and mode as at the checkpoint; the name the processes open it by (for an
    unlinked queue its own if free, else a temporary one: `unlink` it once they have).
    Raises CheckpointError."""
    names = [record["name"]] + ([f"/slsfs-restore-{os.getpid()}-{record['id']}"] if record["unlinked"] else [])
    for name in names:
        try:
            fd = _open(name, O_RDWR | O_NONBLOCK | O_CREAT | O_EXCL, record["mode"], record["maxmsg"],
                       record["msgsize"])
            break
        except FileExistsError:
            if not record["unlinked"]:
                fd = _set_back(name, record)
                break
        except OSError as exc:
            raise CheckpointError(f"cannot make the POSIX message queue {record['name']} again: "
                                  f"{exc.strerror}") from None
    try:
        os.fchown(fd, record["uid"], record["gid"])
        os.fchmod(fd, record["mode"])
        for priority, blob in record["messages"]:
            _send(fd, read_blob(blob), priority)
    finally:
        os.close(fd)
    return name


def open_in(inj, name: str, flags: int) -> int:
    """The process's own descriptor of the queue `name` (made by `make`), with the access
    mode and O_NONBLOCK of `flags`: an injected mq_open."""
    return inj.check(NR_MQ_OPEN, inj.put(name[1:].encode() + b"\0"), flags & (O_ACCMODE | O_NONBLOCK) | O_CLOEXEC,
                     0, 0, what=f"mq_open({name})")


def _set_back(name: str, record: dict) -> int:
    """The existing queue `name`, emptied, if no running process holds it open (the dead
    original's, left in the host's namespace) and its size limits are the checkpoint's."""
    fd = _open(name, O_RDWR | O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if users := _holders(st.st_dev, st.st_ino):
            raise CheckpointError(f"the POSIX message queue {name} is in use by running process(es) "
                                  f"{', '.join(map(str, users[:5]))} (another instance of this image?): its "
                                  "messages cannot be set back to the checkpoint's; stop them first")
        _, maxmsg, msgsize, _ = _attributes(fd)
        if (maxmsg, msgsize) != (record["maxmsg"], record["msgsize"]):
            raise CheckpointError(f"the POSIX message queue {name} exists with other limits (mq_maxmsg {maxmsg}, "
                                  f"mq_msgsize {msgsize}; the checkpoint's: {record['maxmsg']}, {record['msgsize']})"
                                  f": remove it (mq_unlink, or rm /dev/mqueue{name}) and restore again")
        _take_all(fd, msgsize)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holders(dev: int, ino: int) -> list[int]:
    """The processes with an fd on the queue of inode (dev, ino), but ourselves."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                found.append(int(pid))
                break
    return found


def _open(name: str, flags: int, mode: int = 0, maxmsg: int = 0, msgsize: int = 0) -> int:
    attr = ctypes.create_string_buffer(ATTR.pack(0, maxmsg, msgsize, 0))
    path = ctypes.create_string_buffer(name[1:].encode())
    return kernel.syscall(NR_MQ_OPEN, ctypes.addressof(path), flags | O_CLOEXEC, mode,
                          ctypes.addressof(attr) if flags & O_CREAT else 0)


def unlink(name: str) -> None:
    """Remove the name of a queue (the processes holding it keep it)."""
    path = ctypes.create_string_buffer(name[1:].encode())
    kernel.syscall(NR_MQ_UNLINK, ctypes.addressof(path))


def _attributes(fd: int) -> tuple[int, int, int, int]:
    attr = ctypes.create_string_buffer(ATTR.size)
    kernel.syscall(NR_MQ_GETSETATTR, fd, 0, ctypes.addressof(attr))
    return ATTR.unpack(attr.raw)


def _take_all(fd: int, msgsize: int) -> list[tuple[int, bytes]]:
    """Every message of the queue (a descriptor with O_NONBLOCK), in the order received."""
    buffer, priority, messages = ctypes.create_string_buffer(msgsize), ctypes.c_uint(), []
    while True:
        try:
            length = kernel.syscall(NR_MQ_TIMEDRECEIVE, fd, ctypes.addressof(buffer), msgsize,
                                    ctypes.addressof(priority), 0)
        except BlockingIOError:
            return messages
        messages.append((priority.value, buffer.raw[:length]))


def _send(fd: int, data: bytes, priority: int) -> None:
    buffer = ctypes.create_string_buffer(data, len(data) or 1)
    kernel.syscall(NR_MQ_TIMEDSEND, fd, ctypes.addressof(buffer), len(data), priority, 0)
