"""The file system type of a device as a process mounts it, kept from one checkpoint to the next.

What: `MountTypes.type_of(pid, device)` answers from the process's mount namespace's
/proc/PID/mountinfo, parsed once and kept with an open descriptor of that file; at each
later question, poll() on that descriptor tells whether the namespace's mount table changed
since (the kernel reports POLLPRI | POLLERR once per change: mount, umount, move), and
only then is it parsed again. `close()` lets the descriptors go.
Why: a capture asks for every regular file a process holds (files.FileCapture's kept
contents); parsing mountinfo cost ~0.18 ms of every stop per mount namespace (~100
mounts on this machine, 2026-11-30), for a table that rarely changes.

An open mountinfo holds its mount namespace (and so its mounts) alive: the owner (the
write tracking of one group, incremental.Incremental) closes it when it stops
checkpointing those processes, and a namespace not asked about in a whole capture
(`end_capture`) is let go then.
"""
from __future__ import annotations

import os
import select

from .errors import ProcessGone

CHANGED = select.POLLPRI | select.POLLERR


class _Table:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.types: dict[int, str] = {}
        self.asked = True


class MountTypes:
    """File system types by mount namespace and device, re-read only when the table changed."""

    def __init__(self) -> None:
        self._tables: dict[int, _Table] = {}   # mount namespace (inode) -> its table

    def type_of(self, pid: int, device: int) -> str:
        """The type of the file system of `device` as process `pid` mounts it ("" if unknown)."""
        try:
            namespace = os.stat(f"/proc/{pid}/ns/mnt").st_ino
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessGone(pid) from exc
        table = self._tables.get(namespace)
        if table is None:
            try:
                fd = os.open(f"/proc/{pid}/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, ProcessLookupError) as exc:
                raise ProcessGone(pid) from exc
            table = self._tables[namespace] = _Table(fd)
            _parse(table)
        elif _changed(table.fd):
            _parse(table)
        table.asked = True
        return table.types.get(device, "")

    def end_capture(self) -> None:
        """A capture is over: let go of the namespaces it did not ask about."""
        for namespace, table in list(self._tables.items()):
            if not table.asked:
                os.close(self._tables.pop(namespace).fd)
            table.asked = False

    def close(self) -> None:
        for table in self._tables.values():
            os.close(table.fd)
        self._tables.clear()


def _changed(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, CHANGED)
    return bool(poller.poll(0))


def _parse(table: _Table) -> None:
    """(Re-)read the whole table from its descriptor: device -> type of the first mount of it."""
    chunks = []
    offset = 0
    while chunk := os.pread(table.fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    table.types = parse(b"".join(chunks).decode(errors="replace"))


def parse(mountinfo: str) -> dict[int, str]:
    """A /proc/PID/mountinfo text as device -> type of the first mount of it."""
    types: dict[int, str] = {}
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        major, minor = (int(x) for x in fields.split()[2].split(":"))
        types.setdefault(os.makedev(major, minor), rest.split()[0])
    return types
