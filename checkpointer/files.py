"""Open files of a process tree: captured as shared file descriptions (restored by
file_restore.FileRestorer).

What: `FileCapture` turns every fd of the captured processes into a reference to an
image-wide *file* (one per open file description: fds that share an offset, across
dup() and fork(), are found with kcmp(KCMP_FILE) and share one file record).
Kinds: regular `file`, `dir`, `device` (/dev/null & co), `pty_master` (a pseudo-terminal
made again with its settings, ptys.py), `tty` (a slave of an image's pty is reopened on
the new pair; a console or serial tty, /dev/console, /dev/ttyN, is opened again by its path; any other
terminal is reattached to /dev/null at restore, with a warning), `pipe` ends and `fifo`s (named pipes: the buffered bytes are copied with
tee(2), without consuming them; a FIFO is reopened by path at restore and refilled), `unix_pair` (an end of a connected Unix socket with the
bytes queued to it, sockets.py, and the files in flight in them: inflight.py; one whose
peer is outside the image comes back ended by it once those are read; a Unix
connection that a listener of the image has not accepted yet is a `socket` that connects
again, and so is a datagram socket connected to a server: FileCapture._reconnect_pending,
_one_of_a_pair), `socket` (TCP/UDP/Unix sockets listening, bound, or
connected (TCP) to a peer outside the image, which come back closed: netsockets.py; a TCP
connection with both ends in the image, or held for a checkpoint that kills, keeps its state: tcp_repair.py), `memfd` (its contents, shared by the fds and
mappings that name it) and `memfd_fd`, `eventfd`, `signalfd`, `timerfd` (remaining time and
interval), `mqueue` and `mqueue_fd` (a POSIX message queue with its messages, once, and the
descriptors of it: posix_mqueue.py), `epoll` (its watches, re-added in the process that registered them once its
fds exist), and `deleted` (a regular file unlinked while open: its bytes go into the
image, restore makes an O_TMPFILE; one that is mapped too is one record with its mappings,
so that writes through either show in the other).
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
import weakref
from collections import OrderedDict
from contextlib import ExitStack
from typing import TYPE_CHECKING, Callable

from . import (fown, inflight, inotify, kernel, locks, mounttypes, netsockets, posix_mqueue, procfs, ptys, sockets,
               sysv_shm, tcp_hold, tcp_repair)
from .errors import ProcessGone, Unsupported

if TYPE_CHECKING:
    from .shared_memory import SharedMemoryTracking

SIMPLE_DEVICES = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)}   # null, zero, full, random, urandom
MQUEUE_MAGIC = 0x19800202                  # statfs f_type of the POSIX message queue file system
TTY_MAJORS = (4, 5)                     # /dev/tty*, /dev/console (pty slaves: ptys.PTS_MAJORS)
IO_URING = "anon_inode:[io_uring]"      # an io_uring instance, as its fd and its rings' mappings name it
IO_URING_REFUSAL = ("an io_uring instance (asynchronous I/O through rings shared with the kernel) cannot be "
                    "checkpointed; turn it off in the program (MariaDB/MySQL: innodb_use_native_aio=0; libuv, "
                    "Node.js: UV_USE_IO_URING=0)")
POSIX_SHM_DIR = "/dev/shm/"     # shm_open() objects: memory, not storage (a reboot empties it)
O_ACCMODE, O_RDONLY, O_WRONLY, O_RDWR, O_NONBLOCK = 0o3, 0o0, 0o1, 0o2, 0o4000
O_CLOEXEC, O_TMPFILE, O_PATH = 0o2000000, 0o20200000, 0o10000000
KCMP_FILE, KCMP_VM, KCMP_FILES, KCMP_EPOLL_TFD = 0, 1, 2, 7
SPLICE_F_NONBLOCK = 2
F_GETPIPE_SZ, F_SETPIPE_SZ, F_SETFL, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, FD_CLOEXEC = 1032, 1031, 4, 1030, 1, 2, 1
MAX_DELETED_FILE = 1 << 30
SPARSE_READ_PIECE = 1 << 20             # capture reads files with holes in pieces of this size
TCP_ESTABLISHED = 1  # the state of a connected Unix socket in sock_diag
_NR_KCMP, _NR_TEE = 312, 276
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

BlobWriter = Callable[[bytes], list[str]]  # bytes -> chunk ids (hex) kept alive by the image


class FileCapture:
    """Collects the files of every captured process; `files` is the image's file list."""

    def __init__(self, put_blob: BlobWriter, shared: "SharedMemoryTracking | None" = None,
                 keep_blobs: Callable[[list[str]], None] = lambda ids: None,
                 file_system: Callable[[int, int], str] | None = None, hold_connections: bool = False):
        """`shared`: follows shared anonymous memory across checkpoints (only what was
        written since the last one is read); `keep_blobs` is told the blob ids an image
        takes over from the last one without storing them again; `file_system(pid,
        device)`: the type of a file system as the process mounts it (mounttypes.py keeps
        it across checkpoints; by default mountinfo is read once per capture).
        `hold_connections`: for a checkpoint that kills its processes: established TCP
        connections whose peer is outside the image are captured too (`established`) and
        held in repair mode (tcp_repair.hold) until `release_connections`."""
        self.put_blob = put_blob
        self.hold_connections = hold_connections
        self.held: list[tuple[socket.socket, dict]] = []   # our dups of the connections held
        self.shared, self.keep_blobs = shared, keep_blobs
        self._hole_ids: dict[int, list[str]] = {}  # blob ids of a piece of zeros, by length
        self.files: list[dict] = []
        self._shared_ids: dict[tuple, int] = {}  # ("memfd", inode, path) / ("posix_shm", inode) / ("sysv_shm", id) -> file id
        self._holders: dict[str, list[tuple[int, int, int]]] = {}  # target -> [(host pid, fd, file id)]
        self._deleted_ids: dict[tuple[int, int], int] = {}   # (dev, ino) of an unlinked file -> its file id
        self._socket_holders: dict[int, tuple[int, int]] = {}  # socket inode -> (host pid, fd) holding it
        self._captured: set[int] = set()    # host pids of the processes whose fds are recorded
        self._kept_bytes = 0                # of files' contents kept (_kept_contents)
        self._file_systems: dict[int, dict[int, str]] = {}   # mount namespace -> device -> type
        self._file_system = file_system or (lambda pid, device: _file_system(pid, device, self._file_systems))
        self._targets: dict[int, str] = {}  # fd -> /proc/PID/fd link, of the process being recorded
        self._in_flight: list[sockets.Queued] = []   # queued pieces whose fds (ours) are files in flight
        self._depth = 0                     # of sockets in flight being described inside one another
        weakref.finalize(self, sockets.close_passed, self._in_flight)   # if the capture fails before check_peers

    def fd_records(self, pid: int) -> list[dict]:
        parent = int(procfs.frozen_status(pid)["PPid"])
        if parent in self._captured and kernel.syscall(_NR_KCMP, pid, parent, KCMP_VM, 0, 0) == 0:
            raise Unsupported(f"process {pid} shares its address space with its parent {parent} (clone with "
                              "CLONE_VM, not a thread): such processes cannot be checkpointed yet")
        if parent in self._captured and kernel.syscall(_NR_KCMP, pid, parent, KCMP_FILES, 0, 0) == 0:
            raise Unsupported(f"process {pid} shares its file descriptor table with its parent {parent} "
                              "(clone with CLONE_FILES): such processes cannot be checkpointed yet")
        self._captured.add(pid)
        infos = procfs.fds(pid, lambda fd, target: _connection_fdinfo.get((pid, fd, target)))
        self._targets = {info.fd: info.target for info in infos}
        records = []
        for info in infos:
            remembered = _connection_inos.get((pid, info.fd, info.target))
            if (remembered is None or remembered[0] is not info or info.target in self._holders
                    or (known := _connections.get(remembered[1])) is None):
                records.append(self._fd_record(pid, info))
            else:
                records.append(self._connection_fd_record(pid, info, remembered[1], known))
        return records

    def _connection_fd_record(self, pid: int, info: procfs.FdInfo, ino: int, known: dict) -> dict:
        """_fd_record of an fd holding a remembered connection (`known`, its socket `ino`),
        its fdinfo the one remembered with it, the first fd of that socket in this capture:
        what _fd_record makes, without its look-ups: a server's clients are most of its fds
        (a frozen Redis with 50 clients, 57 fds: fd_records 441-496 -> 425-450 us, best of
        1,000, 4 interleaved pairs, load 4.1-4.4; in the stop it takes 2-3x that)."""
        file_id = len(self.files)
        self.files.append({**known, "id": file_id, "target": info.target, "flags": info.flags & ~O_CLOEXEC,
                           "pos": info.pos})
        self._holders[info.target] = [(pid, info.fd, file_id)]
        self._socket_holders.setdefault(ino, (pid, info.fd))
        return {"fd": info.fd, "file": file_id, "cloexec": bool(info.flags & O_CLOEXEC)}

    def _fd_record(self, pid: int, info: procfs.FdInfo) -> dict:
        file_id = self._file_of(pid, info)
        key = (pid, info.fd, info.target)
        if self.files[file_id].get("ino") in _connections and key not in _connection_fdinfo:
            _remember(_connection_fdinfo, key, info)
            if not info.flags & fown.O_ASYNC and "\nlock:" not in info.raw:      # (_connection_fd_record's)
                _remember(_connection_inos, key, (info, self.files[file_id]["ino"]))
        record = {"fd": info.fd, "file": file_id, "cloexec": bool(info.flags & O_CLOEXEC)}
        if "\nlock:" in info.raw:
            record["locks"] = locks.held(info.raw)
        return record

    def _file_of(self, pid: int, info: procfs.FdInfo) -> int:
        """The id of the open file description `info` is an fd of: an earlier one's, found
        among those of its target by a binary search in kcmp's order (a scan of them all
        made 8,000 fds on /dev/ptmx, stress-ng --pty, a 30 s stop: 32 million kcmp calls),
        or a new record's."""
        holders = self._holders.setdefault(info.target, [])
        low, high = 0, len(holders)
        while low < high:
            middle = (low + high) // 2
            other_pid, other_fd, file_id = holders[middle]
            order = _file_order(pid, info.fd, other_pid, other_fd)
            if order == 0:
                return file_id
            low, high = (low, middle) if order < 0 else (middle + 1, high)
        record = self._describe(pid, info)
        record.update(id=len(self.files), target=info.target, flags=info.flags & ~O_CLOEXEC, pos=info.pos)
        if info.flags & fown.O_ASYNC:     # version 8: who gets its signals
            record.update(fown.describe(pid, info.fd))
        self.files.append(record)
        holders.insert(low, (pid, info.fd, record["id"]))
        return record["id"]

    def _describe(self, pid: int, info: procfs.FdInfo) -> dict:
        target = info.target
        if match := _SOCKET.fullmatch(target):      # first: a server holds many (most of them known)
            ino = int(match[1])
            self._socket_holders.setdefault(ino, (pid, info.fd))
            if (known := _connections.get(ino)) is not None:
                return dict(known)
        what = f"fd {info.fd} of process {pid} ({target})"
        if match:
            with sockets.borrow(pid, info.fd) as sock:
                record = self._socket(sock, ino, what, pid)
            _remember_connection(ino, record)
            return record
        if match := _PIPE.fullmatch(target):
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
        if target == "anon_inode:inotify":
            return inotify.describe(pid, info.fd, info.raw, what)
        if target == "anon_inode:[pidfd]":     # the process it names, as the holder sees it; -1: it has exited
            named = procfs.ns_id(info.extra["NSpid"])
            if named > 0:
                return {"kind": "pidfd", "pid": named}
            return {"kind": "pidfd", "pid": named, "exited": os.stat(f"/proc/{pid}/fd/{info.fd}").st_ino}
        if target == IO_URING:
            raise Unsupported(f"{what}: {IO_URING_REFUSAL}")
        if not target.startswith("/"):
            kind = target.removeprefix("anon_inode:").strip("[]")
            raise Unsupported(f"{what}: a {kind} cannot be checkpointed (not supported yet); the checkpointer "
                              "keeps files, pipes, sockets, eventfds, timerfds, signalfds, epoll, inotify and pidfds")
        st = os.stat(f"/proc/{pid}/fd/{info.fd}")
        mode = st.st_mode
        target = _undeleted(target, st)
        if info.flags & O_PATH and not target.endswith(procfs.DELETED):
            return {"kind": "file", "path": target}  # a place, not an open file: a symlink, a device, a FIFO
        if stat.S_ISREG(mode) and target.count("/") == 1 and os.major(st.st_dev) == 0 and \
                kernel.file_system_magic(f"/proc/{pid}/fd/{info.fd}") == MQUEUE_MAGIC:   # a name, not a path
            return {"kind": "mqueue_fd", "queue": self.mqueue(f"/proc/{pid}/fd/{info.fd}", target, st)}
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
        if device in SIMPLE_DEVICES and target.endswith(procfs.DELETED):   # version 14: made again, unlinked
            return {"kind": "device", "path": target, "rdev": list(device), "mode": mode}
        if device in SIMPLE_DEVICES:   # by number: a --root group's /dev/null is a node of its own /dev
            return {"kind": "device", "path": target}
        if device and (device[0] in TTY_MAJORS or device[0] in ptys.PTS_MAJORS):
            return {"kind": "tty", "path": ptys.host_slave_path(st) or target}
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a symbolic link" if stat.S_ISLNK(mode)
                else "a socket file" if stat.S_ISSOCK(mode) else "a device")
        raise Unsupported(f"{what}: {'an unlinked ' + kind[2:] if target.endswith(procfs.DELETED) else kind} "
                          "cannot be checkpointed (only /dev/null and friends, terminals, FIFOs that still "
                          "have their names and O_PATH fds do)")

    def memfd(self, inode: int, path: str, source: str, name: str | None = None) -> int:
        """The file id of a memfd's (or shared memory's, or a deleted file's) contents,
        recorded once per file, read from `source`; it comes back as a memfd named `name`
        (default: its own name, or the deleted file's base name)."""
        if (known := self._shared_ids.get(("memfd", inode, path))) is not None:
            return known       # (a dict, not a scan of the records: one look-up per mapping of thousands)
        if path.endswith(procfs.DELETED) and (held := self._open_deleted(inode, path)) is not None:
            return held     # a deleted file an fd holds too: mapped from that one file (one page cache)

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
        return self._add_shared(("memfd", inode, path), record)

    def mqueue(self, source: str, name: str, st: os.stat_result) -> int:
        """The file id of a POSIX message queue's record (posix_mqueue.py), recorded once
        per queue however many descriptors name it, read through `source`."""
        key = ("mqueue", st.st_dev, st.st_ino)
        if (known := self._shared_ids.get(key)) is not None:
            return known
        record = posix_mqueue.capture(source, name, self.put_blob)
        record.update(id=len(self.files), target=name, flags=O_RDWR, pos=0)
        return self._add_shared(key, record)

    def posix_shm(self, inode: int, path: str, source: str) -> int:
        """The file id of a POSIX shared memory object (a file in /dev/shm: memory that a
        reboot loses, so its contents belong in the image), recorded once per inode, read
        from `source`."""
        if (known := self._shared_ids.get(("posix_shm", inode))) is not None:
            return known
        st = os.stat(source)
        pieces = _read_sparse(source)
        if pieces is None:
            raise Unsupported(f"shared memory {path} is larger than 1 GiB")
        record = {"kind": "posix_shm", "id": len(self.files), "inode": inode, "path": path,
                  "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                  "data": self._put_pieces(pieces)}
        return self._add_shared(("posix_shm", inode), record)

    def sysv_shm(self, shmid: int, source: str, what: str) -> int:
        """The file id of a SysV shared memory segment (checkpointer.sysv_shm), recorded
        once per segment; its contents are read from `source`."""
        if (known := self._shared_ids.get(("sysv_shm", shmid))) is not None:
            return known
        record = sysv_shm.describe(shmid, source, what)
        record.update(kind="sysv_shm", id=len(self.files), target=f"SysV segment {shmid}", flags=0, pos=0,
                      data=self.put_blob(record.pop("contents")))
        return self._add_shared(("sysv_shm", shmid), record)

    def _add_shared(self, key: tuple, record: dict) -> int:
        """Record the contents of shared memory (`record`, whose id is the next), known
        from now on by `key` (memfd, posix_shm, sysv_shm: once per object however many
        mappings show it; a process with 10,000 shared mappings took 3.2 s to checkpoint,
        quadratic, when each mapping scanned every record); its file id."""
        self.files.append(record)
        self._shared_ids[key] = record["id"]
        return record["id"]

    def _socket(self, sock: socket.socket, ino: int, what: str, holder: int) -> dict:
        """A connected Unix socket is one end of a pair (`unix_pair`), with what is queued
        to it (inflight.py); any other TCP, UDP or Unix socket is a `socket` record
        (netsockets.py). `holder`: the process holding it (ours, for a socket in flight)."""
        if sock.family not in netsockets.FAMILIES or sock.type not in sockets.TYPES or (
                sock.family != socket.AF_UNIX and sock.type == socket.SOCK_SEQPACKET):
            raise Unsupported(f"{what}: only TCP, UDP and Unix sockets can be checkpointed")
        info = sockets.unix_info(ino) if sock.family == socket.AF_UNIX else None
        if sock.family == socket.AF_UNIX and info is None:
            raise Unsupported(f"{what}: the kernel does not describe this Unix socket (sock_diag)")
        if info is None or info["state"] != TCP_ESTABLISHED or not _one_of_a_pair(info, ino):
            record = netsockets.describe(sock, info, ino)
            if info is not None and info["type"] == "dgram" and record["state"] == "bound":
                record.update(self._queued(sock, info, what, holder))     # version 10
            if info is not None and info.get("pending_unlisted"):
                raise Unsupported(f"{what}: a listening Unix socket with {info['queued']} connections waiting "
                                  "to be accepted, more than the kernel can list (about 1,600): they cannot be "
                                  "recorded; a checkpoint works again once the server has accepted them")
            if info is not None and info.get("pending"):                  # version 12
                _refuse_closed_pending(info, what)
                record["pending"] = info["pending"]
            if info is not None and info["type"] == "dgram" and info["peer"]:
                record["connected"] = _connected_to(info["peer"])        # version 12
            if info is not None and holder != os.getpid() and _socket_file_gone(holder, info):
                record["unlinked"] = True                                 # version 14
            return record
        record = {"kind": "unix_pair", "type": info["type"], "ino": ino, "peer": info["peer"],
                  "shutdown": info["shutdown"], **self._queued(sock, info, what, holder)}
        if not info["peer"] and info["max_backlog"]:
            record["unread"] = info["max_backlog"]  # version 12: bytes sent to a peer not accepted yet
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED):
            record["passcred"] = 1      # version 10
        maker, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if (uid, gid) != (0, 0):
            record["peer_creds"] = [uid, gid]   # version 23: SO_PEERCRED's, when not the restorer's (root)
        if (maker := _numbered_by(holder, maker)) is not None:
            record["maker"] = maker             # version 26
        return record

    def _queued(self, sock: socket.socket, info: dict, what: str, holder: int) -> dict:
        """`data` (a blob), `rights`, `creds` and `senders` of what waits in a Unix socket's
        receive queue (inflight.record_queue), and its `peek_offset` (SO_PEEK_OFF) if set."""
        pieces = sockets.queue(sock, what, receive_shut=bool(info["shutdown"] & 1), length=info["queued"])
        self._in_flight += pieces       # our fds of the files in flight: closed by check_peers
        try:
            data, extra = inflight.record_queue(pieces, info["type"] == "stream",
                                                lambda fd: self._file_in_flight(fd, holder, what))
        except BaseException:
            sockets.close_passed(pieces)    # now, not when the failed capture is collected
            raise
        peek_offset = sock.getsockopt(socket.SOL_SOCKET, sockets.SO_PEEK_OFF)
        if peek_offset >= 0:        # the program peeks with SO_PEEK_OFF (-1: off)
            extra["peek_offset"] = peek_offset
        return {"data": self.put_blob(data), **extra}

    def _file_in_flight(self, fd: int, holder: int, what: str) -> int:
        """The image file of `fd`, our copy of a file in flight to the socket that process
        `holder` holds (a path as that process sees it, under its root)."""
        info = procfs.own_fd(fd)
        if info.target == "anon_inode:[eventpoll]":
            raise Unsupported(f"{what}: an epoll instance is in flight in its queue (SCM_RIGHTS); its watches "
                              "cannot be made again outside the process that added them")
        if self._depth >= inflight.MAX_DEPTH:
            raise Unsupported(f"{what}: Unix sockets in flight inside Unix sockets in flight, more than "
                              f"{inflight.MAX_DEPTH} deep (or a socket sent over itself): not supported")
        root = os.readlink(f"/proc/{holder}/root")
        if root != "/" and info.target.startswith(root + "/"):
            info.target = info.target[len(root):]
        self._depth += 1
        try:
            return self._file_of(os.getpid(), info)
        finally:
            self._depth -= 1

    def check_peers(self) -> None:
        """A socket pair end whose peer is outside the image comes back as a connection
        that peer has ended, after what it had sent (queued to this end: a daemon's reply to
        a request the image's process made, say) is read; a TCP connection whose two ends are in the image keeps its state; a
        /proc file of a process outside the image is reopened by its path; an inotify watch
        of an unlinked file names the record of the fd that holds it."""
        for f in self.files:
            if f["kind"] != "procfs":
                continue
            host = f.pop("host", None)       # None: a file of the holder's own /proc (its namespace)
            if host is not None and host not in self._captured:
                f["kind"] = "file"
                del f["pid"], f["rest"]
        for f in self.files:
            if f["kind"] == "inotify":
                inotify.resolve_unlinked(f, self._deleted_ids)
        self._reconnect_pending()
        inos = {f["ino"] for f in self.files if f["kind"] == "unix_pair"}
        for f in self.files:
            if f["kind"] == "unix_pair" and f["peer"] and f["peer"] not in inos:
                f["outside"] = 1        # version 29 (before: a closed `socket`, its queue dropped)
        self._repair_tcp_pairs()
        sockets.close_passed(self._in_flight)   # every file in flight is described by now

    def _reconnect_pending(self) -> None:
        """A Unix connection that a listener of the image has not accepted yet (its client
        end is in the image, its other end has no inode yet: peer 0) comes back as a
        client that connects again to that listener (state `connecting`, `connected`
        naming the listener), in the order of
        its accept queue, when the client has sent nothing yet and not shut it down. One
        whose client has sent bytes (`unread`) is refused: they wait in the unaccepted end,
        which cannot be read without accepting it, and dropping them would leave the
        restored server never to see a request its restored client waits on (CRIU refuses
        it too). One shut down stays as it was: ended, and counted as dropped by the
        listener's restore warning. (Nothing can be queued to the client yet: nothing
        holds the other end to send with.)"""
        listeners = {client: f for f in self.files if f["kind"] == "socket" for client in f.get("pending", ())}
        for f in self.files:
            listener = listeners.get(f.get("ino")) if f["kind"] == "unix_pair" and not f["peer"] else None
            if listener is not None and f.get("unread"):
                where = netsockets.show_address(listener)
                raise Unsupported(f"the Unix socket socket:[{f['ino']}] waits for the listener {where} (socket:"
                                  f"[{listener['ino']}]) to accept its connection, and has sent bytes into it: they "
                                  "cannot be read before the listener accepts it (checkpoint again once it has)")
            if listener is None or f.get("unread") or f["shutdown"]:
                continue
            listener["dropped"] -= 1
            for key in ("data", "rights", "creds", "senders", "passcred", "peek_offset", "shutdown"):
                f.pop(key, None)
            f.update(kind="socket", family="unix", protocol=0, options={}, address=None, peer=None, backlog=0,
                     dropped=0, state="connecting", connected={"ino": listener["ino"], "address": listener["address"]})

    def _repair_tcp_pairs(self) -> None:
        """Read the repair state (tcp_repair.py) of the established TCP connections whose
        two ends are in the image: state `established`. Without CAP_NET_ADMIN, or when one
        could not be read consistently, they stay `closed`, with why (`closed_because`)."""
        ends = {connection_ends(f): f for f in self.files if f["kind"] == "socket" and f["state"] == "closed"
                and f["family"] != "unix" and f["address"] and f["peer"] and not f.get("finished")}
        pairs = [(f, ends[key[::-1]]) for key, f in ends.items() if key < key[::-1] and key[::-1] in ends]
        if self.hold_connections:
            self._hold_connections([f for key, f in ends.items() if key[::-1] not in ends])
        if not pairs:
            return
        with ExitStack() as borrowed:
            chosen = []
            for records in pairs:
                socks = tuple(borrowed.enter_context(sockets.borrow(*self._socket_holders[record["ino"]]))
                              for record in records)
                if all(map(tcp_repair.repairable, socks)):
                    for record, sock in zip(records, socks):
                        netsockets.read_options(sock, record)   # (left out while it was `closed`)
                    chosen.append((records, socks))
            try:
                states = tcp_repair.capture([socks for _, socks in chosen], self.put_blob)
            except OSError as e:
                states = [_unreadable(e)] * len(chosen)
        for (records, _), pair in zip(chosen, states):
            if isinstance(pair, str):       # they stay `closed`: the restore's warning says why
                for record in records:
                    record["closed_because"] = pair
                continue
            for record, state in zip(records, pair):
                record.update(state="established", tcp=state)

    def _hold_connections(self, records: list[dict]) -> None:
        """Capture the established TCP connections of `records` (peers outside the image)
        and hold them in repair mode (`hold_connections`); one that cannot be read stays
        `closed`, with why."""
        for record in records:
            sock = sockets.borrow(*self._socket_holders[record["ino"]])
            try:
                if not tcp_repair.repairable(sock):
                    sock.close()
                    continue
                netsockets.read_options(sock, record)   # (left out while it was `closed`)
                state = tcp_repair.hold(sock, self.put_blob)
            except OSError as e:
                sock.close()
                record["closed_because"] = _unreadable(e)
                continue
            if isinstance(state, str):
                sock.close()
                record["closed_because"] = state
                continue
            record.update(state="established", tcp=state)
            self.held.append((sock, record))

    def connections_moved(self) -> list[str]:
        """The held connections (shown) that received bytes since their state was read."""
        return [netsockets.show(record) for sock, record in self.held if tcp_repair.moved(sock, record["tcp"])]

    def release_connections(self, killed: bool, hold_s: float | None = None) -> None:
        """Let the held connections go: after their processes were killed (`killed`), to a
        holder that keeps them in repair mode until the restore, for at most `hold_s`
        seconds (None: tcp_hold.HOLD_S); else they leave repair mode as they were."""
        if killed:
            tcp_hold.keep(self.held, hold_s)
        while self.held:
            sock, record = self.held.pop()
            try:
                if not killed:
                    tcp_repair.release(sock, record["options"].get("SO_REUSEADDR", 0))
            finally:
                sock.close()

    def _kept_contents(self, pid: int, info: procfs.FdInfo, st: os.stat_result) -> dict:
        """The contents, owner and mode of a small temporary or written file that no slsfs
        mount holds (a compiler's file in /tmp, say), so that a restore can make it again if
        it is gone by then. Temporary: in a memory file system, /tmp or /var/tmp; written:
        opened for writing. Nothing for a file opened O_APPEND (a log), a big one, one only
        read elsewhere (a Java program's jar files: read again at every checkpoint, for
        nothing), one we cannot read without breaking a lease, or once the checkpoint has
        kept KEPT_FILES_BYTES."""
        if (st.st_size > KEPT_FILE_MAX or info.flags & O_APPEND
                or self._kept_bytes + st.st_size > KEPT_FILES_BYTES):
            return {}
        file_system = self._file_system(pid, st.st_dev)
        if file_system not in KEPT_FILE_SYSTEMS or not (
                info.flags & O_ACCMODE != O_RDONLY or file_system in MEMORY_FILE_SYSTEMS
                or info.target.startswith(TEMPORARY_DIRECTORIES)):
            return {}
        data = _read_unleased(pid, info)
        if data is None or len(data) > KEPT_FILE_MAX:
            return {}
        self._kept_bytes += len(data)
        return {"contents": self.put_blob(data), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                "gid": st.st_gid}

    def _pipe_contents(self, pid: int, fd: int) -> dict:
        """The bytes buffered in a pipe, copied with tee(2) so the pipe keeps them; in a
        packet-mode pipe (written through O_DIRECT, pipe(2)) each read of the copy gets
        one packet, whose lengths are kept (`packets`) so that the restore writes them as
        packets again."""
        source = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
        try:
            size = fcntl.fcntl(source, F_GETPIPE_SZ)
            # (most pipes hold nothing at most stops: no copy to make, 5 system calls fewer)
            pieces = _teed(source, size) if kernel.bytes_waiting(source) else []
        finally:
            os.close(source)
        record = {"size": size, "data": self.put_blob(b"".join(pieces))}
        if len(pieces) > 1:
            record["packets"] = [len(piece) for piece in pieces]
        return record

    def _deleted(self, pid: int, info: procfs.FdInfo, st: os.stat_result) -> dict:
        """An unlinked file: its bytes, owner, mode and times with its first open file
        description; further descriptions of the same file (opened again, in this process
        or another) name that one (`same_as`), so that they stay one file."""
        inode = (st.st_dev, st.st_ino)
        if inode in self._deleted_ids:
            return {"kind": "deleted", "same_as": self._deleted_ids[inode]}
        mapped = [r["id"] for r in self.files if r["kind"] == "memfd" and r["inode"] == st.st_ino
                  and r["target"] == info.target]
        if mapped:      # mapped too (and recorded first): the fd is the mapping's file, so that writes
            self._deleted_ids[inode] = mapped[0]    # through it show in the mapping, as they did
            return {"kind": "deleted", "same_as": mapped[0]}
        self._deleted_ids[inode] = len(self.files)       # the id _file_of gives this record
        return {"kind": "deleted", "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                "times_ns": [st.st_atime_ns, st.st_mtime_ns], "data": self._deleted_contents(pid, info)}

    def _open_deleted(self, inode: int, path: str) -> int | None:
        """The id of the record of the unlinked file `path` (inode number `inode`) an fd
        holds, if one was recorded."""
        for (_, ino), file_id in self._deleted_ids.items():
            if ino == inode and self.files[file_id].get("target") == path:
                return file_id
        return None

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


# Records of TCP connections by socket inode. A connection's addresses never change, and
# it comes back closed at restore whatever its options, so a process with many clients
# (a server under load) is not asked about each of them at every checkpoint. Nor is its
# fdinfo read again for the same fd (by (host pid, fd, target)): its flags are all that
# fdinfo adds, and they make no difference to a closed socket.
_connections: "OrderedDict[int, dict]" = OrderedDict()
_connection_fdinfo: "OrderedDict[tuple[int, int, str], procfs.FdInfo]" = OrderedDict()
# ... and with it (the same key) its socket's inode, when the fd is neither O_ASYNC nor holds
# locks: such an fd, with that very FdInfo, is one FileCapture._connection_fd_record makes
_connection_inos: "OrderedDict[tuple[int, int, str], tuple[procfs.FdInfo, int]]" = OrderedDict()
MAX_REMEMBERED_CONNECTIONS = 65536


def _unreadable(error: OSError) -> str:
    """Why a TCP connection's state could not be read (a `closed_because`)."""
    if error.errno == errno.EPERM:
        return "reading a TCP connection's state needs CAP_NET_ADMIN"
    return f"its state could not be read ({error.strerror or error})"


def _remember_connection(ino: int, record: dict) -> None:
    if record["kind"] == "socket" and record["state"] == "closed" and record["family"] != "unix":
        _remember(_connections, ino, dict(record))


def _remember(cache: OrderedDict, key, value, most: int = MAX_REMEMBERED_CONNECTIONS) -> None:
    cache[key] = value
    while len(cache) > most:
        cache.popitem(last=False)


def connection_ends(record: dict) -> tuple[tuple, tuple]:
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


def _timespec(text: str) -> list[int]:
    """fdinfo's "(sec, nsec)" as [sec, nsec]."""
    return [int(x) for x in re.findall(r"-?\d+", text)[:2]]


def _read_unleased(pid: int, info: procfs.FdInfo) -> bytes | None:
    """Up to KEPT_FILE_MAX + 1 bytes of the file at process `pid`'s fd, read without opening
    it (an open would break a lease on it: SIGIO to a frozen holder, which cannot give the
    lease up in time). An fd that can read is read through our own dup of it (pread: its
    offset stays). A write-only fd is opened again read-only: only a write lease, or a lease
    being broken (an open waits for the break to end: lease-break-time, 45 s), conflicts
    with that, and the kernel grants a write lease only while no other description of the
    file is open for writing, so one exists only if this fd's own description holds it,
    which its fdinfo shows. None when unreadable (by path only, then)."""
    try:
        if info.flags & O_ACCMODE != O_WRONLY:
            dup = kernel.borrow_fd(pid, info.fd)
            try:
                return os.pread(dup, KEPT_FILE_MAX + 1, 0)
            finally:
                os.close(dup)
        if locks.leased(info.raw):      # (one being broken to none too: the open would wait for it)
            return None
        with open(f"/proc/{pid}/fd/{info.fd}", "rb", buffering=0) as fh:
            return fh.read(KEPT_FILE_MAX + 1)
    except OSError:
        return None


def _one_of_a_pair(info: dict, ino: int) -> bool:
    """Whether a connected Unix socket is an end of a pair (`unix_pair`): a stream or
    seqpacket connection; datagram sockets connected to each other (socketpair), or one
    whose peer is gone (peer 0) that has no name. A datagram server that clients connect
    to reads ESTABLISHED too (Linux 5.15 on), and a client connected to it (its peer does
    not point back): each is a `socket`, bound or `connected`."""
    if info["type"] != "dgram":
        return True
    if not info["peer"] or info["peer"] == ino:     # (connected to itself: a `socket`)
        return info["name"] is None and not info["peer"]
    peer = sockets.unix_info(info["peer"])
    return peer is not None and peer["peer"] == ino


def _socket_file_gone(holder: int, info: dict) -> bool:
    """Whether a Unix socket bound to a path name no longer has its socket file there (the
    file unlinked: a temporary directory cleaned up under a running server), the path read
    as its holder sees it (its root; a relative name from its working directory)."""
    name = info["name"]
    if not name or name[:1] == b"\0" or not info["file_ino"]:
        return False
    where = f"/proc/{holder}/root" if name[:1] == b"/" else f"/proc/{holder}/cwd/"
    try:
        return os.stat(where + os.fsdecode(name), follow_symlinks=False).st_ino != info["file_ino"]
    except OSError:
        return True


def _refuse_closed_pending(info: dict, what: str) -> None:
    """Refuse a Unix listener with a connection waiting to be accepted whose client has
    closed it (its inode reads 0): whatever the client sent before closing waits in the
    unaccepted end, which cannot be read without accepting it, and would be lost."""
    closed = info["pending"].count(0)
    if closed:
        raise Unsupported(f"{what}: {closed} connection(s) waiting to be accepted by this Unix listener were "
                          "closed by their clients, which may have sent bytes into them first: those cannot be "
                          "read before the listener accepts them (checkpoint again once it has)")


def _connected_to(peer: int) -> dict:
    """A Unix socket's `connected`: the inode of the socket it is connected to (a datagram
    server, or a listener that has not accepted it yet) and that socket's address (hex;
    null if it has none)."""
    info = sockets.unix_info(peer)
    name = info and info["name"]
    return {"ino": peer, "address": name.hex() if name else None}


def _teed(source: int, size: int) -> list[bytes]:
    """The bytes buffered in pipe `source` (whose buffer is `size` bytes), copied with tee(2)
    into a pipe of our own and read from there, a read per packet of a packet-mode pipe."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK)
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, size)
        try:
            copied = kernel.syscall(_NR_TEE, source, write_end, size, SPLICE_F_NONBLOCK)
        except BlockingIOError:
            copied = 0  # emptied meanwhile (not while frozen)
        pieces, left = [], copied
        while left:
            pieces.append(os.read(read_end, left))
            left -= len(pieces[-1])
        return pieces
    finally:
        os.close(read_end)
        os.close(write_end)


def _file_order(pid1: int, fd1: int, pid2: int, fd2: int) -> int:
    """0 if the two fds are of one open file description, else -1 or 1: an order of
    descriptions that holds while they exist (kcmp(2) KCMP_FILE compares the kernel's
    pointers, obfuscated but in order: 1 for less, 2 for greater)."""
    return (0, -1, 1)[kernel.syscall(_NR_KCMP, pid1, pid2, KCMP_FILE, fd1, fd2)]


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
        if (parsed := _watch_lines.get(line)) is None:
            parsed = _watch_line(line, sockfs)
            _remember(_watch_lines, line, parsed, MAX_REMEMBERED_WATCH_LINES)
        if not parsed:
            continue
        tfd, events, data, socket_target = parsed
        nth = seen[tfd] = seen.get(tfd, -1) + 1     # the kernel's index among watches of that tfd
        watch = [tfd, events, data]
        if socket_target is not None and targets.get(tfd) == socket_target:
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


def _watch_line(line: str, sockfs: int) -> tuple[int, int, int, str | None] | tuple[()]:
    """(tfd, events, data, "socket:[INODE]" if the watched file is a socket) of an epoll
    fdinfo line, () for a line that is no watch."""
    if not line.startswith("tfd:"):
        return ()
    fields = line.split()
    socket_target = f"socket:[{int(fields[7][4:], 16)}]" \
        if len(fields) >= 9 and fields[8].startswith("sdev:") and int(fields[8][5:], 16) == sockfs else None
    return int(fields[1]), int(fields[3], 16), int(fields[5], 16), socket_target


# The watches of epoll fdinfo lines (_watch_line) read before, by the lines' text, which is
# all a watch is made of: a server's epoll watches every client, and parsing each line again
# at every checkpoint took a Redis with 50 clients ~0.09 ms of each stop (~0.03 ms remembered).
# Whether fd tfd still holds the watched file is asked each time (_epoll_watches).
_watch_lines: "OrderedDict[str, tuple]" = OrderedDict()
MAX_REMEMBERED_WATCH_LINES = 16384


_PROC_PID_FILE = re.compile(r"/proc/(\d+)(/.+)")
_SOCKET, _PIPE = re.compile(r"socket:\[(\d+)\]"), re.compile(r"pipe:\[(\d+)\]")     # /proc/PID/fd links


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


def _numbered_by(holder: int, pid: int) -> int | None:
    """Process `pid` (as our PID namespace numbers it) as the namespace of process `holder`
    numbers it; None when that is not known: 0 (a process outside our namespace), or one
    that has exited in a namespace other than ours (only the kernel knows its number there)."""
    if not pid:
        return None
    depth = len(procfs.frozen_status(holder)["NSpid"].split())
    if depth == 1:
        return pid
    try:
        numbers = procfs.status(pid)["NSpid"].split()
    except (ProcessGone, KeyError):
        return None
    return int(numbers[depth - 1]) if len(numbers) >= depth else None


def _file_system(pid: int, device: int, known: dict[int, dict[int, str]]) -> str:
    """The type of the file system of `device` as process `pid` mounts it ("" if unknown),
    from its mountinfo (read once per mount namespace and capture: `known`)."""
    namespace = os.stat(f"/proc/{pid}/ns/mnt").st_ino
    if namespace not in known:
        with open(f"/proc/{pid}/mountinfo") as f:
            known[namespace] = mounttypes.parse(f.read())
    return known[namespace].get(device, "")


def _undeleted(target: str, st: os.stat_result) -> str:
    """`target` without its " (deleted)" mark when the file is in fact still at that path,
    or the file's other name in the same directory when it still has one.

    The kernel also marks a path deleted when its dentry was merely invalidated (a FUSE
    file system dropping a cached name, for instance) while the name still leads to the
    very same file; only a name that is gone, or that now leads to another file, means
    the file was unlinked. An unlinked name of a file with other hard links (link(), then
    unlink() of the first name: zdtm unlink_fstat03) leaves the file reachable: it is
    reopened by a name found in that directory, and writes after a restore still reach
    it. (A name in another directory is not looked for: the file comes back as an
    unlinked copy.)"""
    if not target.endswith(procfs.DELETED) or target.startswith("/memfd:"):
        return target
    path = target[: -len(procfs.DELETED)]
    try:
        now = os.stat(path)
    except OSError:
        return _other_name(path, st) or target
    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
        return path
    return _other_name(path, st) or target


def _other_name(path: str, st: os.stat_result) -> str | None:
    """A name in `path`'s directory of the file `st` describes (a regular file with links
    left), or None. Reads that directory once (its entries' inode numbers)."""
    if st.st_nlink == 0 or not stat.S_ISREG(st.st_mode):
        return None
    try:
        with os.scandir(os.path.dirname(path) or "/") as entries:
            for entry in entries:
                if entry.inode() == st.st_ino and entry.is_file(follow_symlinks=False):
                    found = entry.stat(follow_symlinks=False)
                    if (found.st_dev, found.st_ino) == (st.st_dev, st.st_ino):
                        return entry.path
    except OSError:
        pass
    return None
