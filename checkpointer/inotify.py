"""inotify instances: their watches are captured from /proc/PID/fdinfo and added again at
restore under the same watch descriptors (the numbers the application compares events
against).

Capture: each watch line of the fdinfo names the watched inode by device, inode number
and file handle; the handle is opened (open_by_handle_at, on a mount of that device in
the process's mount table) and its path read back and checked against the inode number.

Restore: inotify_init1 inside the process, then the watches in descriptor order. The
kernel hands descriptors out in increasing order, so a watch whose descriptor is not
the next one is added and removed until it is; the IN_IGNORED events those removals
queue are read away before the process runs again.

A watched file that was unlinked while a process of the image holds it open (a log file
rotated away under `tail -f`, a temporary file): the watch names that open file's record
(`resolve_unlinked`, once every fd is recorded) and is added again through the restored fd
(/proc/self/fd/N), so it watches the file the program still writes.

Events queued at checkpoint time cannot be kept: the kernel has no way to look at an
instance's queue without taking the events from the program (no peek; fdinfo lists the
watches, FIONREAD the byte count), and nothing from user space puts an event of its
choosing into a queue. CRIU drops them with a warning. We tell the restored program, as
the kernel tells a program whose queue overflowed: the instance comes back holding one
IN_Q_OVERFLOW event ("events were lost; look again"), which programs that use inotify
handle (systemd, inotify-tools, Go's fsnotify, Rust's notify: a rescan). Dropped
silently, a program blocked in read() for the events it was owed waited for ever. The
restore's warning says how many bytes were lost.

Simplification: a watched inode without a path that no process of the image holds open
(deleted, or only mapped) cannot be checkpointed.
"""
from __future__ import annotations

import ctypes
import os
import re
import struct
import tempfile
import termios
from fcntl import ioctl
from typing import Callable

from . import kernel
from .errors import CheckpointError, Unsupported

_NR_INOTIFY_INIT1, _NR_INOTIFY_ADD_WATCH, _NR_INOTIFY_RM_WATCH = 294, 254, 255
_NR_OPEN_BY_HANDLE_AT, _NR_IOCTL, _NR_READ = 304, 16, 0
O_PATH, O_NONBLOCK, O_DIRECTORY = 0o10000000, 0o4000, 0o200000
IN_ACCESS, IN_MODIFY = 0x1, 0x2
# Added to a watch's mask at restore. IN_DONT_FOLLOW: the path names the watched inode
# itself (a symlink watched as such stays so). IN_MASK_ADD (a no-op for a new watch): makes
# the kernel take a mask without events (a watch added with flags only, IN_ONLYDIR say,
# which fdinfo shows as mask 0 and inotify_add_watch refuses alone: EINVAL).
IN_DONT_FOLLOW, IN_MASK_ADD = 0x02000000, 0x20000000
INOTIFY_IOC_SETNEXTWD = 0x40044900      # _IOW('I', 0, __s32)
_EVENT_SIZE = 16                        # struct inotify_event without a name, as IN_Q_OVERFLOW is
_WATCH = re.compile(r"inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) "
                    r"ignored_mask:[0-9a-f]+(?: fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) "
                    r"f_handle:([0-9a-f]+))?")


def describe(pid: int, fd: int, fdinfo: str, what: str) -> dict:
    """The image record of inotify fd `fd` of `pid` (kind "inotify")."""
    watches = []
    for match in _WATCH.finditer(fdinfo):
        wd, ino, sdev, mask = (int(match[i], 16) for i in range(1, 5))
        if match[5] is None:
            raise Unsupported(f"{what}: the kernel gave no file handle for inotify watch {wd}")
        handle = struct.pack("Ii", int(match[5], 16), int(match[6], 16)) + bytes.fromhex(match[7])
        major, minor = sdev >> 20, sdev & 0xFFFFF      # the kernel's internal dev_t encoding
        path = _path_of(pid, handle, ino, f"{major}:{minor}")
        # no path: [dev, ino] of an unlinked file, which resolve_unlinked makes the id of its record
        watches.append([wd, path, mask] if path else [wd, None, mask, [os.makedev(major, minor), ino]])
    return {"kind": "inotify", "watches": sorted(watches, key=lambda watch: watch[0]),
            "queued": _queued_bytes(pid, fd), "what": what}


def resolve_unlinked(record: dict, unlinked: dict[tuple[int, int], int]) -> None:
    """Name, in each watch of an unlinked file, the record of the open file that holds it
    (`unlinked`: (st_dev, st_ino) -> file id of an unlinked file an fd of the image holds)."""
    what = record.pop("what")
    for watch in record["watches"]:
        if watch[1] is None:
            file_id = unlinked.get(tuple(watch[3]))
            if file_id is None:
                raise Unsupported(f"{what}: inotify watch {watch[0]}: the watched inode {watch[3][1]} has no path "
                                  "the checkpointer can reach (deleted, or on a mount of another mount namespace) "
                                  "and no process of the image holds it open")
            watch[3] = file_id


def _path_of(pid: int, handle: bytes, ino: int, device: str) -> str | None:
    """The path of the watched inode, found through its file handle; None if it has none."""
    for mountpoint in _mountpoints(pid, device):
        try:
            mount_fd = os.open(f"/proc/{pid}/root{mountpoint}", os.O_RDONLY | O_DIRECTORY)
        except OSError:
            continue
        try:
            buf = ctypes.create_string_buffer(handle)
            found = kernel.syscall(_NR_OPEN_BY_HANDLE_AT, mount_fd, ctypes.addressof(buf), O_PATH)
        except OSError:
            continue
        finally:
            os.close(mount_fd)
        try:
            path = os.readlink(f"/proc/self/fd/{found}")
            if os.stat(path, follow_symlinks=False).st_ino == ino:
                return path
        except OSError:
            pass
        finally:
            os.close(found)
    return None


def _mountpoints(pid: int, device: str) -> list[str]:
    """Mount points of `device` ("major:minor") in the mount table of `pid`."""
    found = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[2] == device:
                found.append(fields[4].encode().decode("unicode_escape").encode("latin-1").decode())
    return found


def _queued_bytes(pid: int, fd: int) -> int:
    """Bytes of events waiting in the instance (FIONREAD on our own dup of the fd)."""
    dup = kernel.borrow_fd(pid, fd)
    try:
        return kernel.bytes_waiting(dup)
    finally:
        os.close(dup)


def make(inj, record: dict, remap, warnings: list[str], ns_pid: int, held: Callable[[int], int]) -> int:
    """Create the instance inside the process `inj` drives; returns its fd there.
    `held(file id)`: an fd of the process on that (unlinked) file of the image."""
    fd = inj.check(_NR_INOTIFY_INIT1, record["flags"] & O_NONBLOCK, what="inotify_init1")
    skipped = False
    for wd, path, mask, *unlinked in record["watches"]:
        mask |= IN_MASK_ADD if path is None else IN_MASK_ADD | IN_DONT_FOLLOW
        path = remap(path) if path is not None else f"/proc/self/fd/{held(unlinked[0])}"
        where = inj.put(path.encode() + b"\0")
        what = f"inotify_add_watch({path})"
        got = inj.check(_NR_INOTIFY_ADD_WATCH, fd, where, mask, what=what)
        while got < wd:
            inj.check(_NR_INOTIFY_RM_WATCH, fd, got, what="inotify_rm_watch")
            got = inj.check(_NR_INOTIFY_ADD_WATCH, fd, where, mask, what=what)
            skipped = True
        if got != wd:
            raise CheckpointError(f"process {ns_pid}: inotify watch of {path} came back as {got}, not {wd}")
    if skipped:
        _drain(inj, fd)
    if record["queued"]:
        _leave_overflow_event(inj.tid, fd)
        warnings.append(f"process {ns_pid}: {record['queued']} bytes of inotify events queued at checkpoint time "
                        "could not be kept (the kernel cannot show a queue without emptying it); its instance "
                        "holds IN_Q_OVERFLOW instead, the kernel's word for lost events")
    return fd


def _leave_overflow_event(tid: int, fd: int) -> None:
    """Leave one IN_Q_OVERFLOW event in the instance `fd` of task `tid` (see the module's
    docstring). The kernel queues it only on a full queue: a stand-in watch of a temporary
    file of ours fills the queue (IN_MODIFY and IN_ACCESS in turn: equal neighbours would
    merge) until one more event adds nothing; the stand-in's removal finds the queue full,
    so its IN_IGNORED is dropped; then every event ahead of the overflow is read away. The
    instance keeps its usual queue length (fixed when it was made)."""
    instance = kernel.borrow_fd(tid, fd)
    try:
        with tempfile.TemporaryFile() as standin:
            path = ctypes.create_string_buffer(f"/proc/self/fd/{standin.fileno()}".encode())
            wd = kernel.syscall(_NR_INOTIFY_ADD_WATCH, instance, ctypes.addressof(path), IN_ACCESS | IN_MODIFY)
            with open("/proc/sys/fs/inotify/max_queued_events") as f:
                pairs = int(f.read()) // 2 + 1
            queued, before = kernel.bytes_waiting(instance), -1
            while queued != before:
                for _ in range(pairs):
                    os.pwrite(standin.fileno(), b"\0", 0)
                    os.pread(standin.fileno(), 1, 0)
                pairs, queued, before = 1, kernel.bytes_waiting(instance), queued
            kernel.syscall(_NR_INOTIFY_RM_WATCH, instance, wd)
        try:   # the program's next watch gets the number it would have had
            ioctl(instance, INOTIFY_IOC_SETNEXTWD, wd)
        except OSError:
            pass   # a kernel without CONFIG_CHECKPOINT_RESTORE: that number is skipped
        left = kernel.bytes_waiting(instance) - _EVENT_SIZE
        while left > 0:
            left -= len(os.read(instance, min(left, 1 << 16)))
    finally:
        os.close(instance)


def _drain(inj, fd: int) -> None:
    """Read away the IN_IGNORED events that the removals of stand-in watches queued."""
    counter = inj.put(b"\0" * 4)
    inj.check(_NR_IOCTL, fd, termios.FIONREAD, counter, what="FIONREAD")
    left = struct.unpack("i", inj.read(counter, 4))[0]
    while left > 0:
        chunk = min(left, inj.scratch_size - inj.scratch_size % 16)   # whole 16-byte events
        left -= inj.check(_NR_READ, fd, inj.scratch, chunk, what="read(inotify)")
