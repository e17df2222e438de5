"""A process tree's own IPC namespace: every SysV object in it captured at a checkpoint,
and made again under the same ids in a new namespace at restore, before the processes run.

Why: SysV semaphore sets and message queues live in the IPC namespace, not in a process:
shared with the host, a crash leaves them holding the state of AFTER the checkpoint and
a reboot removes them. A persistence group (`sls run`) gets an IPC namespace of its own
(as CRIU's containers have), so all of its objects are its state, captured inside the
stop with its memory: semaphore sets (sysv_sem.py), message queues with their messages
(sysv_msg.py) and the shared memory segments no process maps (sysv_shm.unattached; the
mapped ones are file records of the image, as in the host's namespace), and the
namespace's limits (`LIMITS`: kernel.shmmax, msgmnb, sem, fs.mqueue.msg_max... as a program
or its start script set them with sysctl: a new namespace has the kernel's defaults, and a
restored program that had raised kernel.msgmnb would see msgsnd block or fail).

How: the kernel reads and writes SysV objects, /proc/sysvipc and the *_next_id sysctls
in the IPC namespace of the calling THREAD, and so do the limits' files under /proc/sys;
`entered(pid)` moves the calling thread into the namespace of process `pid` (setns) and
back. The capture costs three *_INFO calls and the reads of the 13 limits (~25 us) when the
namespace holds nothing (most groups), and reads only the kinds of object it holds.

Where it is recorded: the "ipc" key of the first process record of the image (docs/FORMAT.md,
version 20; its "limits" version 22; an image without "ipc" is restored in the restorer's
namespace, as before; one without "limits" gets a new namespace's defaults).
A tree in the capturer's own namespace (a process checkpointed from the host with `sls
checkpoint PID`) keeps the host's objects out of the image: its message queues are refused
by name (sysv_msg.refuse_used), its semaphores are not captured (README says so).
"""
from __future__ import annotations

import ctypes
import os
import struct
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterable, Iterator

from . import sysv_ipc, sysv_msg, sysv_sem, sysv_shm
from .errors import CheckpointError, ProcessGone, Unsupported
from .files import FileCapture
from .inject import Injector
from .kernel import NR

CLONE_NEWIPC = 0x08000000
# *_INFO: how many objects of a kind the namespace holds (an int of the struct it fills, by index)
IN_USE = {"sem": (19, 7), "msg": (12, 0), "shm": (14, 0)}   # SEM_INFO seminfo.semusz, MSG_INFO
INFO_SIZE = 64                                               # msginfo.msgpool, SHM_INFO used_ids
# the namespace's limits, as paths under /proc/sys: what `sysctl` sets in the namespace
LIMITS = ("kernel/shmmax", "kernel/shmall", "kernel/shmmni", "kernel/shm_rmid_forced", "kernel/msgmax",
          "kernel/msgmnb", "kernel/msgmni", "kernel/sem", "fs/mqueue/queues_max", "fs/mqueue/msg_max",
          "fs/mqueue/msgsize_max", "fs/mqueue/msg_default", "fs/mqueue/msgsize_default")
# not set back: the restore makes the segments, from a thread that then exits, and with it set
# the kernel removes the segments no process maps when their creator exits
RMID_FORCED = "kernel/shm_rmid_forced"


def own_namespace(pids: Iterable[int]) -> int | None:
    """One of `pids` (host PIDs) if they are in an IPC namespace other than the calling
    thread's, None if in that one. Processes of one tree in two namespaces are refused."""
    namespaces: dict[int, int] = {}
    for pid in pids:
        try:
            namespaces.setdefault(os.stat(f"/proc/{pid}/ns/ipc").st_ino, pid)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGone(pid) from None
    if len(namespaces) > 1:
        raise Unsupported(f"processes {' and '.join(map(str, namespaces.values()))} of the tree are in different "
                          "IPC namespaces (one of them ran `unshare --ipc`?): a checkpoint takes one namespace")
    ours = os.stat("/proc/thread-self/ns/ipc").st_ino
    return next((pid for ino, pid in namespaces.items() if ino != ours), None)


@contextmanager
def entered(pid: int | None) -> Iterator[None]:
    """The calling thread in the IPC namespace of process `pid` (None: where it is) while
    the block runs."""
    if pid is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            theirs = os.open(f"/proc/{pid}/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGone(pid) from None
        try:
            _setns(theirs, f"of process {pid}")
        finally:
            os.close(theirs)
        try:
            yield
        finally:
            _setns(own, "of this thread")
    finally:
        os.close(own)


def _setns(fd: int, whose: str) -> None:
    if sysv_ipc.libc.setns(fd, CLONE_NEWIPC) != 0:
        raise CheckpointError(f"setns into the IPC namespace {whose}: {os.strerror(ctypes.get_errno())}")


def _in_use(kind: str) -> int:
    command, index = IN_USE[kind]
    info = ctypes.create_string_buffer(INFO_SIZE)
    sysv_ipc.ctl(kind, 0, command, info)
    return struct.unpack_from("i", info, 4 * index)[0]


def capture(files: FileCapture) -> dict:
    """The SysV objects of the calling thread's IPC namespace (see the module docstring);
    the segments `files` has records of (mapped by a process) are left to them."""
    record: dict = {"limits": read_limits()}
    if _in_use("sem"):
        record["sem"] = sysv_sem.capture()
    if _in_use("msg"):
        record["msg"] = sysv_msg.capture()
    if _in_use("shm"):
        mapped = {f["shmid"] for f in files.files if f["kind"] == "sysv_shm"}
        record["shm"] = sysv_shm.unattached(mapped, files.put_blob)
    return record


def read_limits(names: Iterable[str] = LIMITS) -> dict[str, str]:
    """The limits `names` of the calling thread's IPC namespace, as their files read (a
    limit this kernel does not have is left out)."""
    limits = {}
    for name in names:
        try:
            fd = os.open(f"/proc/sys/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            limits[name] = os.read(fd, 128).decode().strip()
        finally:
            os.close(fd)
    return limits


def write_limits(limits: dict[str, str], warnings: list[str], raise_only: bool = False) -> None:
    """Give the calling thread's IPC namespace these limits (`read_limits`'s); one this
    kernel does not have, or refuses, is named in `warnings` (the program runs on with
    the new namespace's value). `raise_only`: each number no lower than the namespace has
    now (before the objects are made: a message longer than msgmax, a segment larger than
    shmmax could not be made; a lowered msgmni or shmmni would refuse objects the namespace
    had made before it was lowered)."""
    for name, value in limits.items():
        if name not in LIMITS:
            continue            # an image is data: only the limits named here are written
        if name == RMID_FORCED:
            if value != "0" and not raise_only:
                warnings.append(f"the IPC namespace's kernel.shm_rmid_forced was {value}: restored 0 (set, "
                                "the segments no process maps would go with the restorer, which made them)")
            continue
        try:
            if raise_only:
                now = read_limits((name,))[name].split()
                value = " ".join(str(max(int(a), int(b))) for a, b in zip(value.split(), now))
            fd = os.open(f"/proc/sys/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except (OSError, KeyError, ValueError) as exc:
            if not raise_only:
                warnings.append(f"the IPC namespace's limit {name.replace('/', '.')} could not be set back to "
                                f"{value!r} ({getattr(exc, 'strerror', None) or exc}): it has the new "
                                "namespace's value")


class Restoring:
    """The IPC namespace of an image made again for its restore (nothing for an image
    without one): `make` gives the launcher a new namespace, fills it and puts the
    calling thread in it (the image's segments are made there as its processes attach
    them); `settle` sets its limits; `leave` takes the thread back, once the restore is
    over."""

    def __init__(self, processes: list[dict]) -> None:
        self.record: dict | None = next((p["ipc"] for p in processes if "ipc" in p), None)
        self._inside = ExitStack()

    def make(self, launcher: Injector, read_blob: Callable[[list[str]], bytes], warnings: list[str]) -> None:
        if self.record is None:
            return
        launcher.check(NR["unshare"], CLONE_NEWIPC, what="unshare(CLONE_NEWIPC)")
        self._inside.enter_context(entered(launcher.tid))
        write_limits(self.record.get("limits", {}), warnings, raise_only=True)
        for semaphores in self.record.get("sem", ()):
            sysv_sem.make(semaphores)
        for queue in self.record.get("msg", ()):
            sysv_msg.make(queue)
        for segment in self.record.get("shm", ()):
            sysv_shm.make(segment, read_blob(segment["data"]), warnings)

    def settle(self, warnings: list[str]) -> None:
        """The namespace's limits exactly as recorded, once every object is made (`make`
        only raised them) and before any process runs."""
        if self.record is not None:
            write_limits(self.record.get("limits", {}), warnings)

    def leave(self) -> None:
        self._inside.close()
