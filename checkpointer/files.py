"""Open files of a process tree: capture as shared file descriptions, and restore.

What: `FileCapture` turns every fd of the captured processes into a reference to an
image-wide *file* (one per open file description: fds that share an offset, across
dup() and fork(), are found with kcmp(KCMP_FILE) and share one file record).
Kinds: regular `file`, `dir`, `device` (/dev/null & co), `pty_master` (a pseudo-terminal
made again with its settings, ptys.py), `tty` (a slave of an image's pty is reopened on
the new pair; any other terminal is reattached to /dev/null at restore, with a warning), `pipe` ends and `fifo`s (named pipes: the buffered bytes are copied with
tee(2), without consuming them; a FIFO is reopened by path at restore and refilled), `unix_pair` (an end of a connected Unix socket with the
bytes queued to it, sockets.py), `socket` (TCP/UDP/Unix sockets listening, bound, or
connected to a peer outside the image, which come back closed: netsockets.py; a TCP
connection with both ends in the image keeps its state: tcp_repair.py), `memfd` (its contents, shared by the fds and
mappings that name it) and `memfd_fd`, `eventfd`, `signalfd`, `timerfd` (remaining time and
interval), `epoll` (its watches, re-added in the process that registered them once its
fds exist), and `deleted` (a regular file unlinked while open: its bytes go into the
image, restore makes an O_TMPFILE).
`FileRestorer` recreates each file once, in the first restored process that uses it,
at a spare fd number, and hands it to other processes with pidfd_getfd, so sharing is
exact; spare fds are closed when every process has its fds.
Why: pipes and shared offsets between parent and child are how process trees talk.

Simplifications: raw/packet/netlink sockets, unlinked FIFOs, inotify and other devices are
refused with Unsupported; unread timerfd expirations come back as one, and so does a periodic timerfd whose time left
reads 0 (expired, not yet counted; or, rarely, disarmed with an interval kept); an epoll watch
on an fd the process has closed since is not restored; a `deleted` file comes back opened O_RDWR; file contents of
regular files are not captured (the slsfs mount keeps them); the fd flags (O_NONBLOCK, FD_CLOEXEC) of a TCP
connection (restored closed) are those it had when first captured.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import socket
import stat
import struct
import subprocess
from collections import OrderedDict
from contextlib import ExitStack
from typing import TYPE_CHECKING, Callable, Iterator

from . import fown, inotify, kernel, locks, netsockets, procfs, ptys, removed_dirs, sockets, sysv_shm, tcp_repair
from .callbatch import run_all
from .errors import CheckpointError, ProcessGone, Unsupported

if TYPE_CHECKING:
    from .shared_memory import SharedMemoryTracking

SIMPLE_DEVICES = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)}   # null, zero, full, random, urandom
TTY_MAJORS = (4, 5)                     # /dev/tty*, /dev/console (pty slaves: ptys.PTS_MAJORS)
POSIX_SHM_DIR = "/dev/shm/"     # shm_open() objects: memory, not storage (a reboot empties it)
O_ACCMODE, O_RDONLY, O_WRONLY, O_RDWR, O_NONBLOCK = 0o3, 0o0, 0o1, 0o2, 0o4000
O_CLOEXEC, O_TMPFILE, O_PATH = 0o2000000, 0o20200000, 0o10000000
O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_NOFOLLOW = 0o100, 0o200, 0o400, 0o1000, 0o400000
KCMP_FILE, KCMP_FILES, KCMP_EPOLL_TFD = 0, 2, 7
SPLICE_F_NONBLOCK = 2
F_GETPIPE_SZ, F_SETPIPE_SZ, F_SETFL, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, FD_CLOEXEC = 1032, 1031, 4, 1030, 1, 2, 1
MAX_DELETED_FILE = 1 << 30
READ_PIECES = 64                        # pieces of a blob read together at restore (4-64 MiB)
SPARSE_READ_PIECE = 1 << 20             # capture reads files with holes in pieces of this size
_ZEROS, _ZERO_PAGE = bytes(SPARSE_READ_PIECE), bytes(kernel.PAGE_SIZE)
TCP_ESTABLISHED = 1  # the state of a connected Unix socket in sock_diag
SOCKET_TYPES = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM, "seqpacket": socket.SOCK_SEQPACKET}
SOCK_CLOEXEC = 0o2000000
_NR_KCMP, _NR_TEE, _NR_PIPE2, _NR_EVENTFD2, _NR_SIGNALFD4 = 312, 276, 293, 290, 289
_NR_PIDFD_OPEN, _NR_PIDFD_GETFD, _NR_FCNTL, _NR_SOCKETPAIR, _NR_SOCKET = 434, 438, 72, 53, 41
_NR_TIMERFD_CREATE, _NR_TIMERFD_SETTIME, _NR_EPOLL_CREATE1, _NR_EPOLL_CTL = 283, 286, 291, 233
_NR_MEMFD_CREATE = 319
MFD_ALLOW_SEALING, F_ADD_SEALS, F_GET_SEALS, F_SEAL_SEAL = 2, 1033, 1034, 1
O_APPEND = 0o2000
# A small file open in a process and on none of our mounts (a compiler's temporary file in
# /tmp) has its contents in the image, made again if gone at restore: its process's memory
# and the file from the same instant. Disk and memory file systems only (not /proc, /sys).
KEPT_FILE_MAX = 1 << 20
KEPT_FILES_BYTES = 8 << 20      # per checkpoint: a bound on what the stop reads
KEPT_FILE_SYSTEMS = ("tmpfs", "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "overlay", "zfs", "vfat", "ramfs")
MEMORY_FILE_SYSTEMS = ("tmpfs", "ramfs")
TEMPORARY_DIRECTORIES = ("/tmp/", "/var/tmp/")
PATH_KINDS = ("file", "dir", "device", "tty", "fifo")   # reopened by path
EPOLL_CTL_ADD = 1

BlobWriter = Callable[[bytes], list[str]]  # bytes -> chunk ids (hex) kept alive by the image


class FileCapture:
    """Collects the files of every captured process; `files` is the image's file list."""

    def __init__(self, put_blob: BlobWriter, shared: "SharedMemoryTracking | None" = None,
                 keep_blobs: Callable[[list[str]], None] = lambda ids: None):
        """`shared`: follows shared anonymous memory across checkpoints (only what was
        written since the last one is read); `keep_blobs` is told the blob ids an image
        takes over from the last one without storing them again."""
        self.put_blob = put_blob
        self.shared, self.keep_blobs = shared, keep_blobs
        self._hole_ids: dict[int, list[str]] = {}  # blob ids of a piece of zeros, by length
        self.files: list[dict] = []
        self._holders: dict[str, list[tuple[int, int, int]]] = {}  # target -> [(host pid, fd, file id)]
        self._deleted_ids: dict[tuple[int, int], int] = {}   # (dev, ino) of an unlinked file -> its file id
        self._socket_holders: dict[int, tuple[int, int]] = {}  # socket inode -> (host pid, fd) holding it
        self._captured: set[int] = set()    # host pids of the processes whose fds are recorded
        self._kept_bytes = 0                # of files' contents kept (_kept_contents)
        self._file_systems: dict[int, dict[int, str]] = {}   # mount namespace -> device -> type
        self._targets: dict[int, str] = {}  # fd -> /proc/PID/fd link, of the process being recorded
        self._leased_files: set[tuple[int, int]] | None = None  # (dev, ino) under a lease, read once

    def fd_records(self, pid: int) -> list[dict]:
        parent = int(procfs.frozen_status(pid)["PPid"])
        if parent in self._captured and kernel.syscall(_NR_KCMP, pid, parent, KCMP_FILES, 0, 0) == 0:
            raise Unsupported(f"process {pid} shares its file descriptor table with its parent {parent} "
                              "(clone with CLONE_FILES): such processes cannot be checkpointed yet")
        self._captured.add(pid)
        infos = procfs.fds(pid, lambda fd, target: _connection_fdinfo.get((pid, fd, target)))
        self._targets = {info.fd: info.target for info in infos}
        return [self._fd_record(pid, info) for info in infos]

    def _fd_record(self, pid: int, info: procfs.FdInfo) -> dict:
        file_id = self._file_of(pid, info)
        if self.files[file_id].get("ino") in _connections:
            _remember(_connection_fdinfo, (pid, info.fd, info.target), info)
        record = {"fd": info.fd, "file": file_id, "cloexec": bool(info.flags & O_CLOEXEC)}
        if "\nlock:" in info.raw:
            record["locks"] = locks.held(info.raw)
        return record

    def _file_of(self, pid: int, info: procfs.FdInfo) -> int:
        holders = self._holders.setdefault(info.target, [])
        for other_pid, other_fd, file_id in holders:
            if _same_file(pid, info.fd, other_pid, other_fd):
                return file_id
        record = self._describe(pid, info)
        record.update(id=len(self.files), target=info.target, flags=info.flags & ~O_CLOEXEC, pos=info.pos)
        if info.flags & fown.O_ASYNC:     # version 8: who gets its signals
            record.update(fown.describe(pid, info.fd))
        self.files.append(record)
        holders.append((pid, info.fd, record["id"]))
        return record["id"]

    def _describe(self, pid: int, info: procfs.FdInfo) -> dict:
        target, what = info.target, f"fd {info.fd} of process {pid} ({info.target})"
        if match := re.fullmatch(r"pipe:\[(\d+)\]", target):
            return {"kind": "pipe", "pipe": int(match[1]), **self._pipe_contents(pid, info.fd)}
        if target == "anon_inode:[eventfd]":
            return {"kind": "eventfd", "count": int(info.extra["eventfd-count"], 16),
                    "semaphore": info.extra.get("eventfd-semaphore", "0") == "1"}
        if target == "anon_inode:[signalfd]":
            return {"kind": "signalfd", "sigmask": int(info.extra["sigmask"], 16)}
        if target == "anon_inode:[timerfd]":
            return {"kind": "timerfd", "clockid": int(info.extra["clockid"]), "ticks": int(info.extra["ticks"]),
                    "value": _timespec(info.extra["it_value"]), "interval": _timespec(info.extra["it_interval"])}
        if target == "anon_inode:[eventpoll]":
            return {"kind": "epoll", "owner": procfs.ns_id(procfs.frozen_status(pid)["NSpid"]),
                    "watches": _epoll_watches(pid, info.fd, info.raw, what, self._targets)}
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            ino = int(match[1])
            self._socket_holders.setdefault(ino, (pid, info.fd))
            if (known := _connections.get(ino)) is not None:
                return dict(known)
            with sockets.borrow(pid, info.fd) as sock:
                record = self._socket(sock, ino, what)
            _remember_connection(ino, record)
            return record
        if target == "anon_inode:inotify":
            return inotify.describe(pid, info.fd, info.raw, what)
        if target == "anon_inode:[pidfd]":     # the process it names, as the holder sees it; -1: it has exited
            return {"kind": "pidfd", "pid": procfs.ns_id(info.extra["NSpid"])}
        if not target.startswith("/"):
            raise Unsupported(f"{what}: fanotify, io_uring and other special files are not supported yet")
        st = os.stat(f"/proc/{pid}/fd/{info.fd}")
        mode = st.st_mode
        target = _undeleted(target, st)
        if info.flags & O_PATH and not target.endswith(procfs.DELETED):
            return {"kind": "file", "path": target}  # a place, not an open file: a symlink, a device, a FIFO
        if target.startswith("/memfd:") or (target.startswith(POSIX_SHM_DIR) and target.endswith(procfs.DELETED)
                                            and stat.S_ISREG(mode)):  # memory, shared with its mappings
            return {"kind": "memfd_fd", "memfd": self.memfd(st.st_ino, target, f"/proc/{pid}/fd/{info.fd}")}
        if target.endswith(procfs.DELETED) and stat.S_ISREG(mode):
            return self._deleted(pid, info, st)
        if stat.S_ISREG(mode) and (record := _procfs_file(pid, target, st)) is not None:
            return record
        if stat.S_ISREG(mode):
            return {"kind": "file", "path": target, **self._kept_contents(pid, info, st)}
        if stat.S_ISDIR(mode):
            return {"kind": "dir", "path": target}
        if stat.S_ISFIFO(mode) and not target.endswith(procfs.DELETED):
            return {"kind": "fifo", "path": target, **self._pipe_contents(pid, info.fd)}
        device = (os.major(st.st_rdev), os.minor(st.st_rdev)) if stat.S_ISCHR(mode) else None
        if device == ptys.MASTER_DEVICE:
            return ptys.describe_master(pid, info.fd, info.extra)
        if device in SIMPLE_DEVICES:   # by number: a --root group's /dev/null is a node of its own /dev
            return {"kind": "device", "path": target}
        if device and (device[0] in TTY_MAJORS or device[0] in ptys.PTS_MAJORS):
            return {"kind": "tty", "path": target}
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a symbolic link" if stat.S_ISLNK(mode)
                else "a socket file" if stat.S_ISSOCK(mode) else "a device")
        raise Unsupported(f"{what}: {'an unlinked ' + kind[2:] if target.endswith(procfs.DELETED) else kind} "
                          "cannot be checkpointed (only /dev/null and friends, terminals, FIFOs that still "
                          "have their names and O_PATH fds do)")

    def memfd(self, inode: int, path: str, source: str, name: str | None = None) -> int:
        """The file id of a memfd's (or shared memory's, or a deleted file's) contents,
        recorded once per file, read from `source`; it comes back as a memfd named `name`
        (default: its own name, or the deleted file's base name)."""
        for record in self.files:
            if record["kind"] == "memfd" and record["inode"] == inode and record["target"] == path:
                return record["id"]

        def read_whole(piece: int = SPARSE_READ_PIECE) -> list[list[str]]:
            pieces = _read_sparse(source, piece)
            if pieces is None:
                raise Unsupported(f"memfd {path} is larger than 1 GiB")
            return [self._put_pieces([p]) for p in pieces]
        data = None if self.shared is None else self.shared.contents((inode, path), source, read_whole,
                                                                     self.put_blob, self.keep_blobs)
        if data is None:
            data = [i for piece in read_whole() for i in piece]
        original = path.removesuffix(procfs.DELETED)
        name = name or (original[len("/memfd:"):] if original.startswith("/memfd:") else os.path.basename(original))
        record = {"kind": "memfd", "id": len(self.files), "inode": inode, "name": name, "target": path,
                  "flags": O_RDWR, "pos": 0, "data": data, **_memfd_seals_and_mode(source)}
        self.files.append(record)
        return record["id"]

    def posix_shm(self, inode: int, path: str, source: str) -> int:
        """The file id of a POSIX shared memory object (a file in /dev/shm: memory that a
        reboot loses, so its contents belong in the image), recorded once per inode, read
        from `source`."""
        for record in self.files:
            if record["kind"] == "posix_shm" and record["inode"] == inode:
                return record["id"]
        st = os.stat(source)
        pieces = _read_sparse(source)
        if pieces is None:
            raise Unsupported(f"shared memory {path} is larger than 1 GiB")
        record = {"kind": "posix_shm", "id": len(self.files), "inode": inode, "path": path,
                  "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                  "data": self._put_pieces(pieces)}
        self.files.append(record)
        return record["id"]

    def sysv_shm(self, shmid: int, mapping_size: int, source: str, what: str) -> int:
        """The file id of a SysV shared memory segment (checkpointer.sysv_shm), recorded
        once per segment; its contents are read from `source`."""
        for record in self.files:
            if record["kind"] == "sysv_shm" and record["shmid"] == shmid:
                return record["id"]
        record = sysv_shm.describe(shmid, mapping_size, source, what)
        record.update(kind="sysv_shm", id=len(self.files), target=f"SysV segment {shmid}", flags=0, pos=0,
                      data=self.put_blob(record.pop("contents")))
        self.files.append(record)
        return record["id"]

    def _socket(self, sock: socket.socket, ino: int, what: str) -> dict:
        """A connected Unix socket is one end of a pair (`unix_pair`); any other TCP, UDP
        or Unix socket is a `socket` record (netsockets.py)."""
        if sock.family not in netsockets.FAMILIES or sock.type not in sockets.TYPES or (
                sock.family != socket.AF_UNIX and sock.type == socket.SOCK_SEQPACKET):
            raise Unsupported(f"{what}: only TCP, UDP and Unix sockets can be checkpointed")
        info = sockets.unix_info(ino) if sock.family == socket.AF_UNIX else None
        if sock.family == socket.AF_UNIX and info is None:
            raise Unsupported(f"{what}: the kernel does not describe this Unix socket (sock_diag)")
        if info is None or info["state"] != TCP_ESTABLISHED:
            return netsockets.describe(sock, info, ino)
        if info["type"] == "stream":
            data = sockets.queued(sock, what)
        else:   # framed: each message as u32 LE length + bytes
            data = b"".join(struct.pack("<I", len(m)) + m
                            for m in sockets.messages(sock, what, receive_shut=bool(info["shutdown"] & 1)))
        return {"kind": "unix_pair", "type": info["type"], "ino": ino, "peer": info["peer"],
                "data": self.put_blob(data), "shutdown": info["shutdown"]}

    def check_peers(self) -> None:
        """A socket pair end whose peer is outside the image comes back as a closed
        connection; a TCP connection whose two ends are in the image keeps its state; a
        /proc file of a process outside the image is reopened by its path."""
        for f in self.files:
            if f["kind"] != "procfs":
                continue
            host = f.pop("host", None)       # None: a file of the holder's own /proc (its namespace)
            if host is not None and host not in self._captured:
                f["kind"] = "file"
                del f["pid"], f["rest"]
        inos = {f["ino"] for f in self.files if f["kind"] == "unix_pair"}
        for f in self.files:
            if f["kind"] == "unix_pair" and f["peer"] and f["peer"] not in inos:
                del f["data"]
                f.update(kind="socket", family="unix", protocol=0, options={}, address=None, peer=None,
                         backlog=0, dropped=0, state="closed")
        self._repair_tcp_pairs()

    def _repair_tcp_pairs(self) -> None:
        """Read the repair state (tcp_repair.py) of the established TCP connections whose
        two ends are in the image: state `established`. Without CAP_NET_ADMIN they stay
        `closed`."""
        ends = {_ends(f): f for f in self.files if f["kind"] == "socket" and f["state"] == "closed"
                and f["family"] != "unix" and f["address"] and f["peer"]}
        pairs = [(f, ends[key[::-1]]) for key, f in ends.items() if key < key[::-1] and key[::-1] in ends]
        if not pairs:
            return
        with ExitStack() as borrowed:
            chosen = []
            for records in pairs:
                socks = tuple(borrowed.enter_context(sockets.borrow(*self._socket_holders[record["ino"]]))
                              for record in records)
                if all(map(tcp_repair.established, socks)):
                    chosen.append((records, socks))
            try:
                states = tcp_repair.capture([socks for _, socks in chosen], self.put_blob)
            except OSError:   # no CAP_NET_ADMIN; or a queue that kept changing: they stay `closed`
                return
        for (records, _), pair in zip(chosen, states):
            for record, state in zip(records, pair or ()):
                record.update(state="established", tcp=state)

    def _kept_contents(self, pid: int, info: procfs.FdInfo, st: os.stat_result) -> dict:
        """The contents, owner and mode of a small temporary or written file that no slsfs
        mount holds (a compiler's file in /tmp, say), so that a restore can make it again if
        it is gone by then. Temporary: in a memory file system, /tmp or /var/tmp; written:
        opened for writing. Nothing for a file opened O_APPEND (a log), one under a lease
        (opening it would break the lease, SIGIO to the frozen holder), a big one, one only
        read elsewhere (a Java program's jar files: read again at every checkpoint, for
        nothing), or once the checkpoint has kept KEPT_FILES_BYTES."""
        if (st.st_size > KEPT_FILE_MAX or info.flags & O_APPEND
                or self._kept_bytes + st.st_size > KEPT_FILES_BYTES):
            return {}
        file_system = _file_system(pid, st.st_dev, self._file_systems)
        if file_system not in KEPT_FILE_SYSTEMS or not (
                info.flags & O_ACCMODE != O_RDONLY or file_system in MEMORY_FILE_SYSTEMS
                or info.target.startswith(TEMPORARY_DIRECTORIES)) or self._leased(info, st):
            return {}
        try:
            with open(f"/proc/{pid}/fd/{info.fd}", "rb", buffering=0) as fh:
                data = fh.read(KEPT_FILE_MAX + 1)
        except OSError:
            return {}       # not readable by us (a write-only fd of an unreadable file): by path only
        if len(data) > KEPT_FILE_MAX:
            return {}
        self._kept_bytes += len(data)
        return {"contents": self.put_blob(data), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                "gid": st.st_gid}

    def _leased(self, info: procfs.FdInfo, st: os.stat_result) -> bool:
        """Is the file under a lease that our read-only open would break? Only a write lease
        conflicts with a read-only open, and the kernel grants one only while no other open
        file description of the file is open for writing (check_conflicting_open), breaking
        it at the next such open: a file an fd has open for writing is under a write lease
        only if that fd's own description holds it, which its fdinfo shows. A read-only fd
        needs /proc/locks, whose every read waits for an RCU grace period (7-16 ms measured
        here: it had made a Redis stop, whose stderr was a file in /tmp, 10 ms longer)."""
        if info.flags & O_ACCMODE != O_RDONLY:
            return any(lock[0] == "LEASE" for lock in locks.held(info.raw))
        if self._leased_files is None:
            self._leased_files = locks.leased_files()
        return (st.st_dev, st.st_ino) in self._leased_files

    def _pipe_contents(self, pid: int, fd: int) -> dict:
        """The bytes buffered in a pipe, copied with tee(2) so the pipe keeps them."""
        source = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
        read_end, write_end = os.pipe2(os.O_NONBLOCK)
        try:
            size = fcntl.fcntl(source, F_GETPIPE_SZ)
            fcntl.fcntl(write_end, F_SETPIPE_SZ, size)
            try:
                copied = kernel.syscall(_NR_TEE, source, write_end, size, SPLICE_F_NONBLOCK)
            except BlockingIOError:
                copied = 0  # empty pipe
            data = os.read(read_end, copied) if copied else b""
        finally:
            for f in (source, read_end, write_end):
                os.close(f)
        return {"size": size, "data": self.put_blob(data)}

    def _deleted(self, pid: int, info: procfs.FdInfo, st: os.stat_result) -> dict:
        """An unlinked file: its bytes, owner, mode and times with its first open file
        description; further descriptions of the same file (opened again, in this process
        or another) name that one (`same_as`), so that they stay one file."""
        inode = (st.st_dev, st.st_ino)
        if inode in self._deleted_ids:
            return {"kind": "deleted", "same_as": self._deleted_ids[inode]}
        self._deleted_ids[inode] = len(self.files)       # the id _file_of gives this record
        return {"kind": "deleted", "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                "times_ns": [st.st_atime_ns, st.st_mtime_ns], "data": self._deleted_contents(pid, info)}

    def _deleted_contents(self, pid: int, info: procfs.FdInfo) -> list[str]:
        pieces = _read_sparse(f"/proc/{pid}/fd/{info.fd}")
        if pieces is None:
            raise Unsupported(f"fd {info.fd} of process {pid}: the unlinked file {info.target} is larger "
                              "than 1 GiB; keep it linked (or run the process on a slsfs mount)")
        return self._put_pieces(pieces)

    def _put_pieces(self, pieces: list[bytes | int]) -> list[str]:
        """The blob ids of a file read by _read_sparse; a hole piece is named (and hashed)
        once per length and capture."""
        ids: list[str] = []
        for piece in pieces:
            if isinstance(piece, int):
                if piece not in self._hole_ids:
                    self._hole_ids[piece] = self.put_blob(bytes(piece))
                ids += self._hole_ids[piece]
            else:
                ids += self.put_blob(piece)
        return ids


def _read_sparse(path: str, piece: int = SPARSE_READ_PIECE) -> list[bytes | int] | None:
    """A file's bytes as pieces of `piece` bytes, the length for a piece that is all hole
    (None for the whole file if it is over MAX_DELETED_FILE), reading only the data extents
    (SEEK_DATA/SEEK_HOLE): shared memory such as PostgreSQL's (142 MiB, 10 of them
    touched) is read inside the stop, and reading it whole took 350 ms."""
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        if size > MAX_DELETED_FILE:
            return None
        count = -(-size // piece)
        try:
            start = os.lseek(fd, 0, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:              # all hole
                return [_piece_length(i, size, piece) for i in range(count)]
            if exc.errno != errno.EINVAL:             # EINVAL: no SEEK_DATA here, read it all
                raise
            data = fh.read(MAX_DELETED_FILE + 1)
            return [data[i:i + piece] for i in range(0, len(data), piece)]
        pieces: list[bytearray | int] = [_piece_length(i, size, piece) for i in range(count)]
        while start < size:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            while start < end:                        # piece by piece
                index, at = divmod(start, piece)
                length = min(end - start, piece - at)
                if isinstance(pieces[index], int):
                    pieces[index] = bytearray(pieces[index])
                data = os.pread(fd, length, start)
                pieces[index][at:at + len(data)] = data
                start += length
            try:
                start = os.lseek(fd, end, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                break
        return [bytes(p) if isinstance(p, bytearray) else p for p in pieces]


def _piece_length(index: int, size: int, piece: int) -> int:
    return min(piece, size - index * piece)


def _processes_mapping(path: str) -> list[int]:
    """The processes that map the file at `path` (by device and inode, from their maps)."""
    st = os.stat(path)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x} {st.st_ino} "
    users = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/maps") as f:
                    if any(wanted in line for line in f):
                        users.append(int(entry.name))
            except OSError:
                pass        # gone meanwhile, or not ours to read
    return users


def _write_sparse(path: str, blob: list[str], read_pieces: Callable[[list[str]], list[bytes]]) -> None:
    """Write a blob into an empty file, piece by piece (READ_PIECES read together), leaving
    runs of zeros as holes (no memory for shared memory that was never touched); a piece
    found to be all zeros is not read again (a big, mostly untouched shared memory repeats
    one such piece)."""
    zero_pieces: dict[str, int] = {}                  # blob id -> length
    with open(path, "r+b", buffering=0) as fh:
        offset = 0
        for first in range(0, len(blob), READ_PIECES):
            ids = blob[first:first + READ_PIECES]
            wanted = [i for i in dict.fromkeys(ids) if i not in zero_pieces]
            read = dict(zip(wanted, read_pieces(wanted))) if wanted else {}
            for piece_id in ids:
                length = zero_pieces.get(piece_id)
                if length is None:
                    data = read[piece_id]
                    length = len(data)
                    if _all_zero(data):
                        zero_pieces[piece_id] = length
                    else:
                        _write_data_pages(fh.fileno(), data, offset)
                offset += length
        fh.truncate(offset)


def _write_data_pages(fd: int, data: bytes, offset: int) -> None:
    """Write the pages of `data` that are not all zeros, each run of them at once: a page of
    zeros stays a hole, as it was (an unlinked file's holes come back where they were)."""
    run = None
    for at in range(0, len(data) + kernel.PAGE_SIZE, kernel.PAGE_SIZE):
        zero = at >= len(data) or _all_zero(data[at:at + kernel.PAGE_SIZE])
        if not zero and run is None:
            run = at
        elif zero and run is not None:
            os.pwrite(fd, memoryview(data)[run:at], offset + run)
            run = None


def _all_zero(data: bytes) -> bool:
    """(Bytes compare with memcmp, 1 MiB in 30 us; a memoryview compares 80 times slower.)"""
    size = len(data)
    return data == (_ZERO_PAGE if size == kernel.PAGE_SIZE else _ZEROS if size == len(_ZEROS) else bytes(size))


# Records of TCP connections by socket inode. A connection's addresses never change, and
# it comes back closed at restore whatever its options, so a process with many clients
# (a server under load) is not asked about each of them at every checkpoint. Nor is its
# fdinfo read again for the same fd (by (host pid, fd, target)): its flags are all that
# fdinfo adds, and they make no difference to a closed socket.
_connections: "OrderedDict[int, dict]" = OrderedDict()
_connection_fdinfo: "OrderedDict[tuple[int, int, str], procfs.FdInfo]" = OrderedDict()
MAX_REMEMBERED_CONNECTIONS = 65536


def _remember_connection(ino: int, record: dict) -> None:
    if record["kind"] == "socket" and record["state"] == "closed" and record["family"] != "unix":
        _remember(_connections, ino, dict(record))


def _remember(cache: OrderedDict, key, value) -> None:
    cache[key] = value
    while len(cache) > MAX_REMEMBERED_CONNECTIONS:
        cache.popitem(last=False)


def _ends(record: dict) -> tuple[tuple, tuple]:
    """(address, peer) of a connected inet socket record, each as (host, port) with an IPv4
    address mapped into IPv6 (::ffff:a.b.c.d) as the IPv4 one: a dual-stack server's end
    of a connection from an IPv4 client is an inet6 socket, the client's an inet one."""
    def endpoint(address: list) -> tuple:
        host = address[0][7:] if address[0].startswith("::ffff:") and "." in address[0] else address[0]
        return host, address[1]
    return endpoint(record["address"]), endpoint(record["peer"])


def _memfd_seals_and_mode(source: str) -> dict:
    """A memfd's (or shared memory's, or a deleted file's) seals (F_GET_SEALS; a file
    elsewhere than in shmem cannot have any: F_SEAL_SEAL) and permission bits."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            seals = fcntl.fcntl(fd, F_GET_SEALS)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            seals = F_SEAL_SEAL
        return {"seals": seals, "mode": stat.S_IMODE(os.fstat(fd).st_mode)}
    finally:
        os.close(fd)


def _fdinfo_field(pid: int, fd: int, name: str) -> str:
    """One field of /proc/PID/fdinfo/FD (as the restorer's namespace numbers it)."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as fdinfo:
        for line in fdinfo:
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    raise OSError(f"no {name} in /proc/{pid}/fdinfo/{fd}")


def _timespec(text: str) -> list[int]:
    """fdinfo's "(sec, nsec)" as [sec, nsec]."""
    return [int(x) for x in re.findall(r"-?\d+", text)[:2]]


def _same_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    return kernel.syscall(_NR_KCMP, pid1, pid2, KCMP_FILE, fd1, fd2) == 0


def _messages(framed: bytes) -> Iterator[bytes]:
    """The messages of a datagram or seqpacket pair's `data` (u32 LE length + bytes each)."""
    offset = 0
    while offset < len(framed):
        (length,) = struct.unpack_from("<I", framed, offset)
        yield framed[offset + 4:offset + 4 + length]
        offset += 4 + length


_sockfs: list[int] = []


def _sockfs_dev() -> int:
    """The device number of the socket file system as the kernel prints it (fdinfo's sdev)."""
    if not _sockfs:
        with socket.socket(socket.AF_UNIX) as sock:
            dev = os.fstat(sock.fileno()).st_dev
        _sockfs.append(os.major(dev) << 20 | os.minor(dev))
    return _sockfs[0]


def _epoll_watches(pid: int, epfd: int, fdinfo: str, what: str, targets: dict[int, str]) -> list[list[int]]:
    """[tfd, events, data] per watch of epoll `epfd`, plus the fd now holding the watched
    file when fd `tfd` no longer does (the fd it was added by was closed or reused, while
    a dup keeps the file open; the watch lives on under its old number). `targets`: the
    process's fds and what they hold (/proc/PID/fd): a watched socket whose inode fd `tfd`
    holds needs no kcmp (a server's epoll watches every client connection)."""
    watches, seen, sockfs = [], {}, _sockfs_dev()
    for line in fdinfo.splitlines():    # "tfd: N events: HEX data: HEX  pos:N ino:HEX sdev:HEX"
        if not line.startswith("tfd:"):
            continue
        fields = line.split()
        tfd = int(fields[1])
        nth = seen[tfd] = seen.get(tfd, -1) + 1     # the kernel's index among watches of that tfd
        watch = [tfd, int(fields[3], 16), int(fields[5], 16)]
        if len(fields) >= 9 and fields[8].startswith("sdev:") and int(fields[8][5:], 16) == sockfs \
                and targets.get(tfd) == f"socket:[{int(fields[7][4:], 16)}]":
            watches.append(watch)   # a socket has one open file: fd tfd holds the watched one
            continue
        slot = ctypes.create_string_buffer(struct.pack("III", epfd, tfd, nth))

        def holds(fd: int) -> bool:
            try:
                return kernel.syscall(_NR_KCMP, pid, pid, KCMP_EPOLL_TFD, fd, ctypes.addressof(slot)) == 0
            except OSError:
                return False    # fd not open
        if not holds(tfd):
            holder = next((fd for fd in sorted(map(int, os.listdir(f"/proc/{pid}/fd"))) if holds(fd)), None)
            if holder is None:
                raise Unsupported(f"{what}: it watches a file (added as fd {tfd}) that the process no longer "
                                  "holds open; such a watch cannot be made again")
            watch.append(holder)
        watches.append(watch)
    return watches


class FileRestorer:
    """Recreates the image's files inside restored processes (each once), then shares them."""

    def __init__(self, files: list[dict], read_blob: Callable[[list[str]], bytes], remap, warnings: list[str],
                 share_ports: bool = False, read_pieces: Callable[[list[str]], list[bytes]] | None = None):
        """`read_pieces(ids)`: the chunks of a blob, one by one, read together (shared memory's
        contents are many pieces); by default, one read_blob each."""
        self.files = {f["id"]: f for f in files}
        self.share_ports = share_ports  # listeners get SO_REUSEPORT (netsockets.rebuild)
        self.read_blob = read_blob
        self.read_pieces = read_pieces or (lambda ids: [read_blob([i]) for i in ids])
        self.remap = remap
        self.warnings = warnings
        self.made: dict[int, tuple[int, int]] = {}  # file id -> (ns pid of holder, spare fd there)
        self.filled: set[int] = set()  # epoll file ids whose watches are back
        self.made_local: dict[tuple[int, int], int] = {}  # (ns pid, file id) -> spare fetched there
        self.fifo_keepers: dict[str, int] = {}  # FIFO path -> our O_RDWR fd, so opens do not block
        self.segments: dict[int, int] = {}  # sysv_shm file id -> its segment, made again
        self.shm_ready: set[int] = set()    # posix_shm file ids given their checkpoint contents
        self.pty_masters = {f["index"]: f["id"] for f in files if f["kind"] == "pty_master"}
        self.pty_index: dict[int, int] = {}  # a pty pair's index in the image -> its new one
        self.pty_here: dict[int, int] = {}   # ... -> our fd on its master, made before its holder
        self.repairing: list[tuple[socket.socket, dict]] = []  # TCP connections in repair mode, our dups
        self.unrepaired: set[tuple[tuple, tuple]] = set()   # (address, peer) of ends restored closed instead
        self.leftovers_cleared = False      # tcp_repair.clear_leftovers done
        self.sealing: list[tuple[int, int]] = []   # (our fd on a new memfd, the seals it gets at `finish`)
        self.new_sockets: dict[int, int] = {}   # socket file id -> its spare fd, made by _make_sockets
        self.memfd_given: set[int] = set()  # memfd file ids whose memfd_create()d file a memfd_fd took
        self.owned: set[int] = set()        # file ids given their O_ASYNC owner (fown.py)

    def posix_shm(self, file_id: int) -> None:
        """Give a POSIX shared memory object its owner, mode and contents at the checkpoint
        (once per restore): made again if gone (after a reboot; or its program removed it);
        one left by the dead instance holds a later state, and is set back. One that running
        processes map (another instance of the image, a clone's original) is refused:
        setting it back would overwrite their memory, sharing it would mix two copies."""
        if file_id in self.shm_ready:
            return
        record = self.files[file_id]
        path = self.remap(record["path"])
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, record["mode"])
        except FileExistsError:
            users = _processes_mapping(path)
            if users:
                raise CheckpointError(f"shared memory {path} is in use by running process(es) "
                                      f"{', '.join(map(str, users[:5]))} (another instance of this "
                                      "image?): two copies cannot share it; stop that instance first") from None
            fd = os.open(path, os.O_RDWR | os.O_TRUNC | os.O_CLOEXEC)
        self.shm_ready.add(file_id)
        try:
            os.fchown(fd, record["uid"], record["gid"])
            _write_sparse(f"/proc/self/fd/{fd}", record["data"], self.read_pieces)
        finally:
            os.close(fd)

    def sysv_segment(self, file_id: int) -> int:
        """The id of the SysV segment of record `file_id`, made again on first use."""
        if file_id not in self.segments:
            record = self.files[file_id]
            self.segments[file_id] = sysv_shm.make(record, self.read_blob(record["data"]), self.warnings)
        return self.segments[file_id]

    def _mode_and_seals(self, tid: int, fd: int, record: dict) -> None:
        """A new memfd gets its file mode now and its seals (F_SEAL_SEAL for one made
        without MFD_ALLOW_SEALING, as shared memory is) in `finish`, once its mappings
        exist (F_SEAL_WRITE and F_SEAL_FUTURE_WRITE would refuse a writable one)."""
        ours = os.open(f"/proc/{tid}/fd/{fd}", os.O_PATH | os.O_CLOEXEC)   # not open for writing: an
        if "mode" in record:        # version 5, as "seals"                 # exe must not be (PR_SET_MM_MAP)
            os.chmod(f"/proc/self/fd/{ours}", record["mode"])
        self.sealing.append((ours, record.get("seals", F_SEAL_SEAL)))

    def close(self) -> None:
        """Once every process has its fds and mappings: let go of the FIFOs held open
        meanwhile, and remove again the SysV segments that had been removed."""
        for sock, _ in self.repairing:       # a restore that failed before `finish`
            sock.close()
        self.repairing.clear()
        for ours, _ in self.sealing:
            os.close(ours)
        self.sealing.clear()
        for keeper in list(self.fifo_keepers.values()) + list(self.pty_here.values()):
            os.close(keeper)
        self.fifo_keepers.clear()
        self.pty_here.clear()
        for file_id, shmid in self.segments.items():
            if self.files[file_id]["removed"]:
                sysv_shm.remove(shmid)

    def install(self, builder, fds: list[dict]) -> list[int]:
        """Give a stub-built process exactly its fds; returns the spare fds it holds for others."""
        inj, ns_pid = builder.inj, builder.meta["pid"]
        spare_base = builder.spare_base
        spares: list[int] = []
        if not self.leftovers_cleared:   # before any socket is bound: a listener on their port too
            self._clear_leftover_connections()
        self._make_sockets(builder, fds)
        moves = builder.batch()  # the dup3s of our own spares, in one trip: a spare is above every
        for record in fds:       # fd number of the image, so no later call here can be handed one
            file_id = record["file"]
            if file_id not in self.made:
                spares += self._make(builder, self.files[file_id], spare_base)
            holder, spare = self.made[file_id]
            if holder == ns_pid:
                moves = moves.room()
                moves.add(kernel.NR["dup3"], spare, record["fd"], O_CLOEXEC if record["cloexec"] else 0,
                          what=f"dup3 to fd {record['fd']}")
                continue
            pidfd = inj.check(_NR_PIDFD_OPEN, holder, 0, what="pidfd_open")
            got = inj.check(_NR_PIDFD_GETFD, pidfd, spare, 0, what="pidfd_getfd")
            inj.check(kernel.NR["close"], pidfd)
            if got == record["fd"]:  # pidfd_getfd happened to pick the very number
                inj.check(_NR_FCNTL, got, F_SETFD, FD_CLOEXEC if record["cloexec"] else 0, what="F_SETFD")
            else:
                inj.check(kernel.NR["dup3"], got, record["fd"], O_CLOEXEC if record["cloexec"] else 0,
                          what=f"dup3 to fd {record['fd']}")
                inj.check(kernel.NR["close"], got)
        moves.run()
        for record in fds:
            file = self.files[record["file"]]
            if "fown" in file and file["id"] not in self.owned:
                self.owned.add(file["id"])
                fown.give(inj, record["fd"], file["fown"], self.warnings, f"process {ns_pid}, fd {record['fd']}")
        self._fill_epolls(builder, fds)
        return spares

    def retake_locks(self, builder) -> None:
        """The file locks the process held, once its spare fds are closed (closing any fd of
        a file drops the process's POSIX locks on it)."""
        for record in builder.meta["fds"]:
            if record.get("locks"):
                file = self.files[record["file"]]
                locks.retake(builder.inj, record["fd"], record["locks"], file.get("path") or file["target"],
                             self.warnings)

    def _fill_epolls(self, builder, fds: list[dict]) -> None:
        """Watches of the epolls this process registered them in, now that its fds exist."""
        inj = builder.inj
        adds = builder.batch()  # the watches in one trip, but for those added under another fd number
        for record in fds:
            epoll = self.files[record["file"]]
            if epoll["kind"] != "epoll" or epoll["owner"] != builder.meta["pid"] or epoll["id"] in self.filled:
                continue
            for tfd, events, data, *holder in epoll["watches"]:
                event = struct.pack("=IQ", events, data)
                if holder:   # in order: the fds queued before it first
                    adds.run()
                    adds = builder.batch()
                    address = inj.put(event)
                    self._add_under_old_number(builder, tfd, holder[0], lambda: inj.check(
                        _NR_EPOLL_CTL, record["fd"], EPOLL_CTL_ADD, tfd, address, what=f"epoll_ctl(ADD {tfd})"))
                else:
                    adds = adds.room(len(event))
                    adds.add(_NR_EPOLL_CTL, record["fd"], EPOLL_CTL_ADD, tfd, adds.put(event),
                             what=f"epoll_ctl(ADD {tfd})")
            self.filled.add(epoll["id"])
        adds.run()

    @staticmethod
    def _add_under_old_number(builder, tfd: int, holder: int, add: Callable) -> None:
        """Run `add` while fd `tfd` is a dup of fd `holder` (an epoll watch lives under the
        number it was added by), then give `tfd` back whatever it held."""
        inj = builder.inj
        flags = inj.call(_NR_FCNTL, tfd, F_GETFD)        # < 0: not open
        aside = inj.check(_NR_FCNTL, tfd, F_DUPFD_CLOEXEC, builder.spare_base, what="F_DUPFD_CLOEXEC") \
            if flags >= 0 else None
        inj.check(kernel.NR["dup3"], holder, tfd, 0, what=f"dup3 to fd {tfd}")
        add()
        if aside is None:
            inj.check(kernel.NR["close"], tfd)
        else:
            inj.check(kernel.NR["dup3"], aside, tfd, O_CLOEXEC if flags & FD_CLOEXEC else 0, what=f"dup3 to fd {tfd}")
            inj.check(kernel.NR["close"], aside)

    def local_fd(self, builder, file_id: int, base: int) -> int:
        """An fd of this process on the image file `file_id` (made here, or fetched with
        pidfd_getfd from its holder and kept as a spare); for mappings and reopening."""
        inj, ns_pid = builder.inj, builder.meta["pid"]
        if (ns_pid, file_id) in self.made_local:
            return self.made_local[(ns_pid, file_id)]
        if file_id not in self.made:
            builder.spares += self._make(builder, self.files[file_id], base)
        holder, spare = self.made[file_id]
        if holder == ns_pid:
            return spare
        pidfd = inj.check(_NR_PIDFD_OPEN, holder, 0, what="pidfd_open")
        got = self._spare(builder, inj.check(_NR_PIDFD_GETFD, pidfd, spare, 0, what="pidfd_getfd"), base)
        inj.check(kernel.NR["close"], pidfd)
        builder.spares.append(got)
        self.made_local[(ns_pid, file_id)] = got
        return got

    @staticmethod
    def _spare(builder, fd: int, base: int) -> int:
        """fd moved to a spare number (from `base` on): one trip."""
        return run_all(builder.batch(), _to_spares([fd], base))[0]

    def _make_sockets(self, builder, fds: list[dict]) -> None:
        """The process's sockets not made yet, made at once: socket() for each in one trip,
        and each moved to a spare number in another; `_make_socket` takes them from here."""
        records = {f["id"]: f for f in (self.files[r["file"]] for r in fds) if f["kind"] == "socket"
                   and f["id"] not in self.made and f["id"] not in self.new_sockets}
        if len(records) < 2:
            return
        made = run_all(builder.batch(), [(_NR_SOCKET, _socket_args(r), "socket") for r in records.values()])
        moved = run_all(builder.batch(), _to_spares(made, builder.spare_base))[::2]
        self.new_sockets.update(zip(records, moved))

    def _make(self, builder, record: dict, base: int) -> list[int]:
        inj, ns_pid, kind = builder.inj, builder.meta["pid"], record["kind"]
        if kind == "pipe":
            return self._make_pipe(builder, record, base)
        if kind == "unix_pair":
            return self._make_unix_pair(builder, record, base)
        if kind == "socket":
            spare = self._make_socket(builder, record, base)
            self.made[record["id"]] = (ns_pid, spare)
            return [spare]
        if kind == "eventfd":
            fd = inj.check(_NR_EVENTFD2, record["count"], (record["flags"] & O_NONBLOCK) | record["semaphore"],
                           what="eventfd2")
        elif kind == "timerfd":
            fd = inj.check(_NR_TIMERFD_CREATE, record["clockid"], record["flags"] & O_NONBLOCK, what="timerfd_create")
            # an expiry not yet read is kept as one due at once; so is a periodic timer whose
            # time left reads 0 (its expiry passed, the kernel had not counted it yet)
            due = record["ticks"] or any(record["interval"])
            value = record["value"] if any(record["value"]) or not due else [0, 1]
            if any(value):  # armed
                spec = inj.put(struct.pack("4q", *record["interval"], *value))
                inj.check(_NR_TIMERFD_SETTIME, fd, 0, spec, 0, what="timerfd_settime")
        elif kind == "epoll":
            fd = inj.check(_NR_EPOLL_CREATE1, 0, what="epoll_create1")  # watches: fill_epolls
        elif kind == "signalfd":
            mask = inj.put(struct.pack("Q", record["sigmask"]))
            fd = inj.check(_NR_SIGNALFD4, -1, mask, 8, record["flags"] & O_NONBLOCK, what="signalfd4")
        elif kind == "inotify":
            fd = inotify.make(inj, record, self.remap, self.warnings, ns_pid)
        elif kind == "pidfd":
            fd = self._make_pidfd(builder, record)
        elif kind == "deleted" and "same_as" in record:     # another open file description of it
            fd = self._reopen(builder, self.local_fd(builder, record["same_as"], base), record["flags"])
            inj.check(kernel.NR["lseek"], fd, record["pos"], 0, what="lseek")
        elif kind == "deleted":
            fd = self._make_deleted(builder, record)
        elif kind == "memfd":
            fd = inj.check(_NR_MEMFD_CREATE, inj.put(record["name"].encode()[:200] + b"\0"), MFD_ALLOW_SEALING,
                           what="memfd_create")
            _write_sparse(f"/proc/{builder.tid}/fd/{fd}", record["data"], self.read_pieces)
            self._mode_and_seals(builder.tid, fd, record)
        elif kind == "memfd_fd":  # an open file description of that memfd
            fd = self._memfd_description(builder, record, base)
            inj.check(kernel.NR["lseek"], fd, record["pos"], 0, what="lseek")
        elif kind == "pty_master":
            if record["index"] in self.pty_here:   # made for a session's terminal (session_terminal)
                fd = sockets.push_fd(inj, builder.tid, self.pty_here[record["index"]])
                inj.check(_NR_FCNTL, fd, F_SETFD, 0, what="F_SETFD")
            else:
                fd, self.pty_index[record["index"]] = ptys.make_master(builder, record)
            if record["queued"]:
                self.warnings.append(f"process {ns_pid}: {record['queued']} bytes waiting in the pseudo-terminal "
                                     f"{record['index']} were dropped")
        elif kind == "procfs":
            fd = self._make_procfs(builder, record)
        elif kind not in PATH_KINDS:
            raise CheckpointError(f"the image holds a file of kind {kind!r}, unknown to this version "
                                  "of slsfs (written by a newer one?): upgrade to restore it")
        else:
            path = self.remap(record["path"])
            if kind == "fifo":
                self._open_fifo(path, record)
            flags = record["flags"] & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY)
            if kind == "tty" and (pty := self.pty_slave(builder, record["path"], base)):
                path, flags = pty, flags | O_NOCTTY     # the session's terminal: controlling_terminal
            elif kind == "tty" and record["path"] == "/dev/tty" and self._terminal_is_restored(builder):
                pass          # "the controlling terminal", which is a pty of the image again
            elif kind == "tty":
                self.warnings.append(f"process {ns_pid}: the terminal {record['path']} is now /dev/null")
                path = "/dev/null"
            try:
                if kind == "dir" and removed_dirs.is_removed(path):
                    fd = self._open_removed_directory(builder, path, flags)
                else:
                    fd = builder.open(path, flags, f"file {record['target']}")
            except CheckpointError:
                if kind == "file" and "contents" in record and self._make_again(builder, path, record):
                    fd = builder.open(path, flags, f"file {record['target']}")
                elif kind == "file" and _PROC_TASK_FILE.search(path):
                    # a file of a process in /proc (a --root group's /proc is mounted only once
                    # its processes run; the PIDs of a restore in cwd mode are new)
                    self.warnings.append(f"process {ns_pid}: {path} could not be opened again (a file of a "
                                         "process in /proc): it is /dev/null now")
                    fd = builder.open("/dev/null", flags & (O_ACCMODE | O_NONBLOCK | O_CLOEXEC), "/dev/null")
                else:
                    raise
            if kind == "file" and record["pos"]:
                inj.check(kernel.NR["lseek"], fd, record["pos"], 0, what=f"lseek({path})")
        spare = self._spare(builder, fd, base)
        self.made[record["id"]] = (ns_pid, spare)
        return [spare]

    def _memfd_description(self, builder, record: dict, base: int) -> int:
        """The first read-write description of a memfd is the memfd_create()d file itself;
        the others are opened again through /proc. An opened one counts as a writer of the
        memfd, which then cannot be executed (execveat(fd) failed with ETXTBSY after a
        restore; fexecve of a memfd is how runc and others run a sealed copy)."""
        local = self.local_fd(builder, record["memfd"], base)
        if record["flags"] & O_ACCMODE != O_RDWR or record["memfd"] in self.memfd_given:
            return self._reopen(builder, local, record["flags"])
        self.memfd_given.add(record["memfd"])
        fd = builder.inj.check(_NR_FCNTL, local, F_DUPFD_CLOEXEC, 0, what="F_DUPFD_CLOEXEC")
        builder.inj.check(_NR_FCNTL, fd, F_SETFL, record["flags"], what="F_SETFL")
        return fd

    @staticmethod
    def _open_removed_directory(builder, path: str, flags: int) -> int:
        """An fd on a directory removed since (made again for the open: removed_dirs)."""
        with removed_dirs.stand_in(path) as ghost:
            if ghost is None:
                raise CheckpointError(f"cannot reopen the removed directory {path}: no directory can be "
                                      "made in its place to stand in for it (pass a remap)")
            return builder.open(ghost, flags, f"the removed directory {path}")

    def _make_again(self, builder, path: str, record: dict) -> bool:
        """Make a file whose contents the image kept (FileCapture._kept_contents) and that is
        gone, as it was at the checkpoint, in the process's view of the file system (with the
        directories gone with it, private to its owner); False if something is there."""
        where = f"/proc/{builder.tid}/root{path}"
        if os.path.lexists(where):
            return False
        missing = []
        parent = os.path.dirname(where)
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(missing):
            os.mkdir(directory, 0o700)
            os.chown(directory, record["uid"], record["gid"])
        data = self.read_blob(record["contents"])
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, record["uid"], record["gid"])
            os.fchmod(fd, record["mode"])
        finally:
            os.close(fd)
        self.warnings.append(f"process {builder.meta['pid']}: {path} was gone: it was made again with "
                             f"its contents at the checkpoint ({len(data)} bytes)")
        return True

    def _terminal_is_restored(self, builder) -> bool:
        """Whether the process's controlling terminal is a pty pair of the image, made again
        (session_terminal), so that /dev/tty can be opened as it was."""
        index, _ = ptys.controlling(procfs.stat_fields(builder.tid))
        return index is not None and index in self.pty_index.values()

    def pty_slave(self, builder, path: str, base: int) -> str | None:
        """The new path of a pty slave whose master is in the image (made first if need
        be), or None."""
        index = ptys.slave_index(path)
        if index not in self.pty_masters:
            return None
        if index not in self.pty_index:
            builder.spares += self._make(builder, self.files[self.pty_masters[index]], base)
        return f"{ptys.PTS_PREFIX}{self.pty_index[index]}"

    def session_terminal(self, inj, meta: dict) -> None:
        """Right after a session leader's setsid, before the rest of its session is forked
        from it: its controlling terminal, if that pty is in the image (the master made by
        us, handed to its holder later), so that every process of the session has it."""
        index = (meta.get("ctty") or {}).get("pts")
        if index not in self.pty_masters:
            return
        if index not in self.pty_index:
            self.pty_here[index], self.pty_index[index] = ptys.make_master_here(self.files[self.pty_masters[index]])
        ptys.take_control(inj, self.pty_index[index], None, f"process {meta['pid']}")

    def controlling_terminal(self, builder) -> None:
        """A session leader's controlling pty and foreground process group, as they were."""
        ctty, ns_pid = builder.meta.get("ctty"), builder.meta["pid"]
        if not ctty:
            return
        if ctty["pts"] not in self.pty_index:    # session_terminal made it, if it is in the image
            self.warnings.append(f"process {ns_pid}: its controlling terminal {ptys.PTS_PREFIX}{ctty['pts']} "
                                 "is outside the image: the session has none now")
            return
        ptys.take_control(builder.inj, self.pty_index[ctty["pts"]], ctty["foreground"], f"process {ns_pid}")

    def _open_fifo(self, path: str, record: dict) -> None:
        """Hold the FIFO open for reading and writing (the process's own open then does
        not block, whichever end it wants) and refill it once with its buffered bytes."""
        if path in self.fifo_keepers:
            return
        try:
            keeper = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise CheckpointError(f"cannot reopen the FIFO {path}: {e.strerror} (it must exist where the "
                                  "image says, or pass a remap)") from None
        self.fifo_keepers[path] = keeper
        if not stat.S_ISFIFO(os.fstat(keeper).st_mode):
            raise CheckpointError(f"{path} was a FIFO when checkpointed and is not one now")
        data = self.read_blob(record["data"])
        if record["size"] != fcntl.fcntl(keeper, F_GETPIPE_SZ):
            fcntl.fcntl(keeper, F_SETPIPE_SZ, record["size"])
        if data and os.write(keeper, data) != len(data):
            raise CheckpointError(f"could not refill the FIFO {path} with {len(data)} bytes")

    def _make_deleted(self, builder, record: dict) -> int:
        """An unlinked file made again where it was: O_TMPFILE, or where the file system does
        not offer it (FUSE), a file created under a fresh name and unlinked at once; then
        opened again with the original's flags, unless it was made with O_TMPFILE too."""
        original = record["target"][: -len(procfs.DELETED)]
        directory = self.remap(os.path.dirname(original))
        what = f"the unlinked file {original}"
        as_made = record["flags"] & O_TMPFILE == O_TMPFILE and record["flags"] & O_ACCMODE == O_WRONLY
        fd = builder.inj.call(kernel.NR["openat"], -100, builder.inj.put(directory.encode() + b"\0"),
                              O_TMPFILE | (O_WRONLY if as_made else O_RDWR), record["mode"])
        if fd == -errno.EOPNOTSUPP:
            name = os.path.join(directory, f".slsfs-restored-{os.urandom(6).hex()}")
            fd = builder.open(name, O_CREAT | O_EXCL | O_RDWR, what, mode=record["mode"])
            os.unlink(name)
        elif fd < 0:
            raise CheckpointError(f"cannot make {what} again in {directory}: {os.strerror(-fd)} (the "
                                  "directory must exist where the image says, or pass a remap)")
        path = f"/proc/{builder.tid}/fd/{fd}"
        _write_sparse(path, record["data"], self.read_pieces)
        if "uid" in record:      # version 4
            os.chown(path, record["uid"], record["gid"])
            os.chmod(path, record["mode"])
            os.utime(path, ns=tuple(record["times_ns"]))
        inj = builder.inj
        if record["flags"] & O_TMPFILE == O_TMPFILE:    # it was made so too: the same flags
            inj.check(_NR_FCNTL, fd, F_SETFL, record["flags"], what="F_SETFL")
        else:   # opened again: one opened O_TMPFILE shows it in F_GETFL, with O_RDWR whatever it had
            fd, tmpfile = self._reopen(builder, fd, record["flags"]), fd
            inj.check(kernel.NR["close"], tmpfile)
        inj.check(kernel.NR["lseek"], fd, record["pos"], 0, what="lseek")
        return fd

    def _make_procfs(self, builder, record: dict) -> int:
        """/proc/PID/... of the image's process `pid` as it runs now: its host PID read
        from a pidfd the holder opens in its own namespace, the file opened by the
        restorer (a --root group's /proc is mounted only once its processes run) and
        handed over; /dev/null, with a warning, if that process is not in the image."""
        inj, flags = builder.inj, record["flags"] & (O_ACCMODE | O_NONBLOCK)
        ours, pidfd = -1, inj.call(_NR_PIDFD_OPEN, record["pid"], 0)
        if pidfd >= 0:
            try:
                host = _fdinfo_field(builder.tid, pidfd, "Pid")
                ours = os.open(f"/proc/{host}{record['rest']}", flags | os.O_CLOEXEC)
            except OSError:
                pass
            finally:
                inj.check(kernel.NR["close"], pidfd, what="close(pidfd)")
        if ours < 0:
            self.warnings.append(f"process {builder.meta['pid']}: {record['target']} (a file of process "
                                 f"{record['pid']}, not in the image) is /dev/null now")
            return builder.open("/dev/null", flags, "/dev/null")
        try:
            fd = sockets.push_fd(inj, builder.tid, ours)
        finally:
            os.close(ours)
        if record["pos"]:
            inj.check(kernel.NR["lseek"], fd, record["pos"], 0, what=f"lseek({record['target']})")
        return fd

    def _make_pidfd(self, builder, record: dict) -> int:
        """A pidfd of the image's process `pid` (every process exists by now), or, for one
        that had exited, of a process that has exited (a short-lived child of ours)."""
        flags = record["flags"] & (O_NONBLOCK | O_EXCL)       # PIDFD_NONBLOCK, PIDFD_THREAD
        if record["pid"] > 0:
            fd = builder.inj.call(_NR_PIDFD_OPEN, record["pid"], flags)
            if fd < 0:
                raise CheckpointError(f"process {builder.meta['pid']} holds a pidfd of process {record['pid']}, "
                                      f"which is not in the image: {os.strerror(-fd)}")
            return fd
        child = subprocess.Popen(["true"])
        try:
            ours = os.pidfd_open(child.pid)
        finally:
            child.wait()
        try:
            fd = sockets.push_fd(builder.inj, builder.tid, ours)
        finally:
            os.close(ours)
        builder.inj.check(_NR_FCNTL, fd, F_SETFL, flags & O_NONBLOCK, what="F_SETFL on a pidfd")
        return fd

    def _make_socket(self, builder, record: dict, base: int) -> int:
        """A socket of the process (made by _make_sockets, or now) at a spare number (from
        `base` on), which the restorer binds/listens/connects (borrowed) and gives its status
        flags. A TCP connection with both ends in the image is made in repair mode
        (tcp_repair.py), left there until `finish`; if that fails (the original, still
        running, holds the address pair: a clone) it comes back closed."""
        inj, owner = builder.inj, f"process {builder.meta['pid']}"
        spare = self.new_sockets.pop(record["id"], None)
        if spare is None:
            spare = self._new_socket(builder, record, base)
        if record["state"] == "established":
            try:
                self._repair(builder, spare, record)
            except OSError as exc:
                inj.check(kernel.NR["close"], spare, what="close")
                self.unrepaired.add(_ends(record))
                record = {**record, "state": "closed"}
                self.warnings.append(f"{owner}: the connection {netsockets.show(record)} could not be made again "
                                     f"as it was ({exc}): it is restored closed")
                spare = self._new_socket(builder, record, base)
        with sockets.borrow(builder.tid, spare) as sock:
            if record["state"] != "established":
                netsockets.rebuild(sock, record, self.remap, share_port=self.share_ports, cwd=builder.meta["cwd"])
            fcntl.fcntl(sock.fileno(), F_SETFL, record["flags"])   # (the file's flags: shared with our dup)
        if warning := netsockets.warning(record, owner):
            self.warnings.append(warning)
        return spare

    def _new_socket(self, builder, record: dict, base: int) -> int:
        return self._spare(builder, builder.inj.check(_NR_SOCKET, *_socket_args(record), what="socket"), base)

    def _repair(self, builder, fd: int, record: dict) -> None:
        """Give socket `fd` the options and, in repair mode, the TCP state of `record`;
        our dup of it waits in `repairing` for `finish`."""
        sock = sockets.borrow(builder.tid, fd)
        try:
            netsockets.rebuild(sock, record, self.remap, cwd=builder.meta["cwd"])   # the options
            tcp_repair.rebuild(sock, record["tcp"], tuple(record["address"]), tuple(record["peer"]), self.read_blob)
        except BaseException:
            sock.close()
            raise
        self.repairing.append((sock, record))

    def _clear_leftover_connections(self) -> None:
        """Before the first socket is made: the ends of the image's connections that the
        killed original left closing in the kernel go (tcp_repair.clear_leftovers)."""
        self.leftovers_cleared = True
        pairs = [(tuple(f["address"]), tuple(f["peer"])) for f in self.files.values()
                 if f["kind"] == "socket" and f.get("tcp")]
        try:
            tcp_repair.clear_leftovers(pairs)
        except OSError:     # not allowed (no CAP_NET_ADMIN): the repair says so itself
            pass

    def finish(self) -> None:
        """Once every process has its files and mappings: memfds get their seals, and the
        repaired TCP connections leave repair mode (a packet sent before its peer existed
        would have been answered with a reset) and send what their application had written
        but the kernel not yet sent; one whose other end was restored closed is reset."""
        while self.sealing:
            ours, seals = self.sealing.pop()
            try:
                writable = os.open(f"/proc/self/fd/{ours}", os.O_RDWR | os.O_CLOEXEC)   # F_ADD_SEALS wants one
            except OSError as exc:    # ETXTBSY: a deleted executable's copy, the process's exe now
                if exc.errno != errno.ETXTBSY:
                    raise
                continue
            finally:
                os.close(ours)
            try:
                fcntl.fcntl(writable, F_ADD_SEALS, seals)
            finally:
                os.close(writable)
        while self.repairing:
            sock, record = self.repairing.pop()
            if _ends(record)[::-1] in self.unrepaired:
                try:
                    tcp_repair.abandon(sock)
                finally:
                    sock.close()
                self.warnings.append(f"the connection {netsockets.show(record)} is restored reset: its other "
                                     "end could not be made again")
                continue
            try:
                tcp_repair.finish(sock, record["tcp"], record["options"].get("SO_REUSEADDR", 0), self.read_blob)
            except OSError as exc:
                raise CheckpointError(f"the connection {netsockets.show(record)} could not be resumed: {exc}") from None
            finally:
                sock.close()

    def _make_unix_pair(self, builder, record: dict, base: int) -> list[int]:
        """A new socketpair: this end, its peer's records on the other, each refilled."""
        inj, ns_pid = builder.inj, builder.meta["pid"]
        sock_type = SOCKET_TYPES[record["type"]] | SOCK_CLOEXEC
        inj.check(_NR_SOCKETPAIR, socket.AF_UNIX, sock_type, 0, inj.scratch, what="socketpair")
        ends = [self._spare(builder, fd, base) for fd in struct.unpack("ii", inj.read(inj.scratch, 8))]
        peers = [f for f in self.files.values() if f["kind"] == "unix_pair" and f["ino"] == record["peer"]]
        for end, other_end, this in [(ends[0], ends[1], record)] + [(ends[1], ends[0], p) for p in peers]:
            self.made[this["id"]] = (ns_pid, end)
            inj.check(_NR_FCNTL, end, F_SETFL, this["flags"], what="F_SETFL on a socket")
            data = self.read_blob(this["data"])
            if data:  # bytes or messages queued for this end were sent by its peer
                with sockets.borrow(builder.tid, other_end) as sender:
                    if this["type"] == "stream":
                        sender.sendall(data)
                    else:
                        for message in _messages(data):
                            sender.send(message)
        for end, this in [(ends[0], record)] + [(ends[1], p) for p in peers]:   # once refilled
            if this.get("shutdown"):      # the kernel's mask: 1 receiving, 2 sending, 3 both
                with sockets.borrow(builder.tid, end) as sock:
                    sock.shutdown((socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR)[this["shutdown"] - 1])
        return ends

    def _make_pipe(self, builder, record: dict, base: int) -> list[int]:
        inj, ns_pid = builder.inj, builder.meta["pid"]
        inj.check(_NR_PIPE2, inj.scratch, 0, what="pipe2")
        read_fd, write_fd = struct.unpack("ii", inj.read(inj.scratch, 8))
        read_spare, write_spare = self._spare(builder, read_fd, base), self._spare(builder, write_fd, base)
        data = self.read_blob(record["data"])
        with open(f"/proc/{builder.tid}/fd/{write_spare}", "wb", buffering=0) as pipe:
            if record["size"] != fcntl.fcntl(pipe, F_GETPIPE_SZ):
                fcntl.fcntl(pipe, F_SETPIPE_SZ, record["size"])
            if pipe.write(data) != len(data):
                raise CheckpointError(f"could not refill pipe {record['pipe']} with {len(data)} bytes")
        # each open file description of the pipe: the first of each direction is an end of
        # pipe2; more (the pipe reopened through /proc/PID/fd) are opened again, since
        # their flags (O_NONBLOCK) are their own
        unused = {O_RDONLY: read_spare, O_WRONLY: write_spare}
        spares = [read_spare, write_spare]
        for other in self.files.values():
            if other["kind"] == "pipe" and other["pipe"] == record["pipe"]:
                mode = other["flags"] & O_ACCMODE
                end = unused.pop(mode, None)
                if end is None:
                    reopened = self._reopen(builder, write_spare if mode == O_WRONLY else read_spare, mode | O_NONBLOCK)
                    end = self._spare(builder, reopened, base)
                    spares.append(end)
                inj.check(_NR_FCNTL, end, F_SETFL, other["flags"], what="F_SETFL on a pipe")
                self.made[other["id"]] = (ns_pid, end)
        return spares

    @staticmethod
    def _reopen(builder, fd: int, flags: int) -> int:
        """A new open file description, with open `flags`, of what fd `fd` of the process
        being built is: its fd number there (close-on-exec). Opened here, through our /proc
        (a --root group has none of its own yet), and handed over."""
        flags &= ~(O_CREAT | O_EXCL | O_TRUNC | O_NOFOLLOW | O_NOCTTY)
        ours = os.open(f"/proc/{builder.tid}/fd/{fd}", flags | os.O_CLOEXEC)
        try:
            return sockets.push_fd(builder.inj, builder.tid, ours)
        finally:
            os.close(ours)


def _socket_args(record: dict) -> tuple[int, int, int]:
    """socket()'s arguments for a socket record."""
    family = {name: number for number, name in netsockets.FAMILIES.items()}[record["family"]]
    return family, SOCKET_TYPES[record["type"]] | SOCK_CLOEXEC, record["protocol"]


def _to_spares(fds: list[int], base: int) -> list[tuple[int, tuple[int, ...], str]]:
    """The calls that move each fd to a spare number (from `base` on): F_DUPFD_CLOEXEC's
    results (even indices) are the spares."""
    return [call for fd in fds for call in ((_NR_FCNTL, (fd, F_DUPFD_CLOEXEC, base), "F_DUPFD_CLOEXEC"),
                                            (kernel.NR["close"], (fd,), "close"))]


_PROC_TASK_FILE = re.compile(r"/proc/(\d+|self|thread-self)/")
_PROC_PID_FILE = re.compile(r"/proc/(\d+)(/.+)")


def _procfs_file(holder: int, target: str, st: os.stat_result) -> dict | None:
    """A `procfs` record for a file of a process in /proc (/proc/PID/comm, .../status),
    naming that process by its PID in the holder's namespace (and its path, for one that
    turns out not to be in the image); None for any other file, or a process that is gone
    or in another namespace. The holder's /proc is the daemon's
    (PIDs as the host numbers them) or one of its own namespace (a --root group's)."""
    root = os.readlink(f"/proc/{holder}/root") if "/proc/" in target else "/"
    match = _PROC_PID_FILE.fullmatch(target[len(root):] if target.startswith(root + "/") else target)
    if match is None:
        return None
    number = int(match[1])
    if st.st_dev != os.stat("/proc").st_dev:      # the holder's own /proc: its namespace's numbers
        return {"kind": "procfs", "pid": number, "rest": match[2], "path": target}
    try:
        theirs, holders = procfs.status(number)["NSpid"].split(), procfs.status(holder)["NSpid"].split()
    except (ProcessGone, KeyError):      # a file of a process since gone: reopened by path
        return None
    if len(theirs) != len(holders):
        return None
    # `host`: checked once every process is captured (FileCapture.check_peers)
    return {"kind": "procfs", "pid": int(theirs[-1]), "rest": match[2], "path": target, "host": number}


def _file_system(pid: int, device: int, known: dict[int, dict[int, str]]) -> str:
    """The type of the file system of `device` as process `pid` mounts it ("" if unknown),
    from its mountinfo (read once per mount namespace and capture: `known`)."""
    namespace = os.stat(f"/proc/{pid}/ns/mnt").st_ino
    if namespace not in known:
        types = known[namespace] = {}
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                fields, _, rest = line.partition(" - ")
                major, minor = (int(x) for x in fields.split()[2].split(":"))
                types.setdefault(os.makedev(major, minor), rest.split()[0])
    return known[namespace].get(device, "")


def _undeleted(target: str, st: os.stat_result) -> str:
    """`target` without its " (deleted)" mark when the file is in fact still at that path.

    The kernel also marks a path deleted when its dentry was merely invalidated (a FUSE
    file system dropping a cached name, for instance) while the name still leads to the
    very same file; only a name that is gone, or that now leads to another file, means
    the file was unlinked."""
    if not target.endswith(procfs.DELETED) or target.startswith("/memfd:"):
        return target
    path = target[: -len(procfs.DELETED)]
    try:
        now = os.stat(path)
    except OSError:
        return target
    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
        return path
    return target
