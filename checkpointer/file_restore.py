"""Open files of a process tree, made again: the restore side of files.py (whose docstring
says what each kind of file record holds and what is simplified).

What: `FileRestorer` recreates each file once, in the first restored process that uses it,
at a spare fd number, and hands it to other processes with pidfd_getfd, so sharing is
exact; spare fds are closed when every process has its fds.
Why: a restored process must find each fd where it was, sharing its open file
description with exactly the fds (its own and other processes') it shared it with.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import socket
import stat
import struct
import subprocess
from typing import Callable

from . import (fown, inflight, inotify, kernel, locks, netsockets, posix_mqueue, procfs, ptys, removed_dirs, sockets,
               sysv_shm, tcp_hold, tcp_repair)
from .callbatch import run_all
from .files import (FD_CLOEXEC, F_ADD_SEALS, F_DUPFD_CLOEXEC, F_GETFD, F_GETPIPE_SZ, F_SEAL_SEAL, F_SETFD, F_SETFL,
    F_SETPIPE_SZ, MFD_ALLOW_SEALING, O_ACCMODE, O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_RDWR,
    O_TMPFILE, O_WRONLY, SPARSE_READ_PIECE, connection_ends)
from .errors import CheckpointError
from .inject import Injector


O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_NOFOLLOW, O_DIRECT = 0o100, 0o200, 0o400, 0o1000, 0o400000, 0o40000
READ_PIECES = 64                        # pieces of a blob read together at restore (4-64 MiB)
_ZEROS, _ZERO_PAGE = bytes(SPARSE_READ_PIECE), bytes(kernel.PAGE_SIZE)
SOCKET_TYPES = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM, "seqpacket": socket.SOCK_SEQPACKET}
SOCK_CLOEXEC = 0o2000000
_NR_PIDFD_OPEN, _NR_PIDFD_GETFD, _NR_FCNTL, _NR_SOCKETPAIR, _NR_SOCKET, _NR_CONNECT = 434, 438, 72, 53, 41, 42
_NR_TIMERFD_CREATE, _NR_TIMERFD_SETTIME, _NR_EPOLL_CREATE1, _NR_EPOLL_CTL = 283, 286, 291, 233
_NR_MEMFD_CREATE = 319
_NR_PIPE2, _NR_EVENTFD2, _NR_SIGNALFD4 = 293, 290, 289
PATH_KINDS = ("file", "dir", "device", "tty", "fifo")   # reopened by path
EPOLL_CTL_ADD = 1
_PROC_TASK_FILE = re.compile(r"/proc/(\d+|self|thread-self)/")
_PROC_PID_FILE = re.compile(r"/proc/\d+/")


def _refill_pipe(fd: int, record: dict, data: bytes, ends: list[dict], what: str) -> None:
    """Put a pipe's (or FIFO's) buffered bytes back through `fd`, a description of it
    that can write, with its capacity. A packet-mode pipe (`packets` recorded, or an end
    written through O_DIRECT) gets them packet by packet through O_DIRECT, so that each
    read returns one packet, as it would have."""
    if record["size"] != fcntl.fcntl(fd, F_GETPIPE_SZ):
        fcntl.fcntl(fd, F_SETPIPE_SZ, record["size"])
    packets = record.get("packets") or [len(data)]
    if "packets" in record or any(end.get("flags", 0) & O_DIRECT for end in ends):
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
    at = 0
    for length in packets if data else ():
        if os.write(fd, data[at:at + length]) != length:
            raise CheckpointError(f"could not refill {what} with {len(data)} bytes")
        at += length


def _has_own_proc(tid: int) -> bool:
    """Whether the process has a /proc of its own (restore.py gives one to processes it
    restores in a new PID namespace): not the restorer's."""
    try:
        return os.stat(f"/proc/{tid}/root/proc").st_dev != os.stat("/proc").st_dev
    except OSError:
        return False


def _system_terminal(path: str) -> bool:
    """Whether `path` is a console, virtual or serial terminal (/dev/console, /dev/ttyN,
    /dev/ttySN): a device that outlives the processes, unlike a pty, whose number another
    session may hold by the restore. Such a terminal is opened again by its path, as CRIU
    does; a pty not in the image becomes /dev/null."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    device = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return stat.S_ISCHR(st.st_mode) and (device[0] == 4 or device == (5, 1))


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


def _nearest_directory(directory: str) -> str:
    """`directory`, or its nearest ancestor that exists (as the restorer sees it: as the
    processes do until their root is set, last)."""
    while not os.path.isdir(directory) and directory != os.path.dirname(directory):
        directory = os.path.dirname(directory)
    return directory


def _seals(record: dict) -> int:
    """A memfd's seals at the checkpoint (F_SEAL_SEAL, alone, for shared memory and for
    one made without MFD_ALLOW_SEALING; version 5)."""
    return record.get("seals", F_SEAL_SEAL)


def _memfd_flags(record: dict) -> int:
    """memfd_create's flags for the memfd of `record`: without MFD_ALLOW_SEALING the kernel
    seals it with F_SEAL_SEAL at once, which is all most have."""
    return 0 if _seals(record) == F_SEAL_SEAL else MFD_ALLOW_SEALING


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


def _fdinfo_field(pid: int, fd: int, name: str) -> str:
    """One field of /proc/PID/fdinfo/FD (as the restorer's namespace numbers it)."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as fdinfo:
        for line in fdinfo:
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    raise OSError(f"no {name} in /proc/{pid}/fdinfo/{fd}")


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
        self.mqueues: dict[int, str] = {}   # mqueue file id -> the name it was made again under
        self.shm_ready: set[int] = set()    # posix_shm file ids given their checkpoint contents
        self.pty_masters = {f["index"]: f["id"] for f in files if f["kind"] == "pty_master"}
        self.pty_index: dict[int, int] = {}  # a pty pair's index in the image -> its new one
        self.pty_here: dict[int, int] = {}   # ... -> our fd on its master, made before its holder
        self.repairing: list[tuple[socket.socket, dict]] = []  # TCP connections in repair mode, our dups
        self.resuming: list[tuple[socket.socket, dict]] = []   # ... taken from their holder (tcp_hold.py)
        self.unrepaired: set[tuple[tuple, tuple]] = set()   # (address, peer) of ends restored closed instead
        self.leftovers_cleared = False      # tcp_repair.clear_leftovers done
        self.sealing: list[tuple[int, int]] = []   # (our fd on a new memfd, the seals it gets at `finish`)
        self.new_sockets: dict[int, int] = {}   # socket file id -> its spare fd, made by _make_sockets
        self.memfd_given: set[int] = set()  # memfd file ids whose memfd_create()d file a memfd_fd took
        self.owned: set[int] = set()        # file ids given their O_ASYNC owner (fown.py)
        self.unlinked_names: dict[int, int] = {}    # id of a Unix socket bound `unlinked` -> our O_PATH fd
        self.shared_addresses = netsockets.shared_addresses(files)
        self.reuseport_off: list[socket.socket] = []  # our dups of sockets bound sharing: SO_REUSEPORT off at finish
        self.exited_children: dict[int | str, subprocess.Popen] = {}   # see _exited
        self.thread_pidfds: set[int] = set()   # file ids of pidfds of threads, opened once they exist
        # a stopped stand-in with that PID (in the image's namespace) for a process not in the
        # image, or None (restore.py sets it once the processes exist: sessions.StandIns)
        self.stand_in: Callable[[int], Injector | None] = lambda pid: None

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

    def _mqueue(self, file_id: int) -> str:
        """The name the processes open the POSIX message queue of record `file_id` by,
        made again on first use (in the restored IPC namespace: the restorer's thread is
        in it meanwhile)."""
        if file_id not in self.mqueues:
            self.mqueues[file_id] = posix_mqueue.make(self.files[file_id], self.read_blob)
        return self.mqueues[file_id]

    def sysv_segment(self, file_id: int) -> int:
        """The id of the SysV segment of record `file_id`, made again on first use."""
        if file_id not in self.segments:
            record = self.files[file_id]
            self.segments[file_id] = sysv_shm.make(record, self.read_blob(record["data"]), self.warnings)
        return self.segments[file_id]

    def _mode_and_seals(self, tid: int, fd: int, record: dict) -> None:
        """A new memfd gets its file mode now and its seals in `finish`, once its mappings
        exist (F_SEAL_WRITE and F_SEAL_FUTURE_WRITE would refuse a writable one); until
        then we hold it, so only one that needs more than `_memfd_flags` gave it is held (a
        process with 10,000 shared mappings, stress-ng --mlock, took 10,000 of our fds)."""
        seals = _seals(record)
        to_seal = seals not in (0, F_SEAL_SEAL)
        if "mode" not in record and not to_seal:
            return
        ours = os.open(f"/proc/{tid}/fd/{fd}", os.O_PATH | os.O_CLOEXEC)   # not open for writing: an
        if "mode" in record:        # version 5, as "seals"                 # exe must not be (PR_SET_MM_MAP)
            os.chmod(f"/proc/self/fd/{ours}", record["mode"])
        if to_seal:
            self.sealing.append((ours, seals))
        else:
            os.close(ours)

    def close(self) -> None:
        """Once every process has its fds and mappings: let go of the FIFOs held open
        meanwhile, and remove again the SysV segments and the POSIX message queues that had
        been removed."""
        for sock in [sock for sock, _ in self.repairing + self.resuming] + self.reuseport_off:  # a restore
            sock.close()                                                    # that failed before `finish`
        self.repairing.clear()
        self.resuming.clear()
        self.reuseport_off.clear()
        for child in self.exited_children.values():
            child.wait()
        self.exited_children.clear()
        for ours, _ in self.sealing:
            os.close(ours)
        self.sealing.clear()
        for keeper in [*self.fifo_keepers.values(), *self.pty_here.values(), *self.unlinked_names.values()]:
            os.close(keeper)
        self.fifo_keepers.clear()
        self.pty_here.clear()
        self.unlinked_names.clear()
        for file_id, shmid in self.segments.items():
            if self.files[file_id]["removed"]:
                sysv_shm.remove(shmid)
        for file_id, name in self.mqueues.items():
            if self.files[file_id]["unlinked"]:
                posix_mqueue.unlink(name)

    def install(self, builder, fds: list[dict]) -> list[int]:
        """Give a stub-built process exactly its fds; returns the spare fds it holds for others."""
        inj, ns_pid = builder.inj, builder.meta["pid"]
        spare_base = builder.spare_base
        spares: list[int] = []
        if not self.leftovers_cleared:   # before any socket is bound: a listener on their port too
            self._clear_leftover_connections()
        self._make_sockets(builder, fds)
        placed: list[tuple[dict, int, bool]] = []   # (fd record, a spare of it here, ours to close)
        others: list[tuple[dict, int, int]] = []    # (fd record, holder, its spare there)
        for record in fds:
            file_id = record["file"]
            if file_id not in self.made:
                spares += self._make(builder, self.files[file_id], spare_base)
            holder, spare = self.made[file_id]
            if holder == ns_pid:
                placed.append((record, spare, False))
            else:
                others.append((record, holder, spare))
        placed += [(record, fetched, True) for (record, _, _), fetched in zip(others, self._fetch(builder, others))]
        calls = []  # every fd to its number in one trip: a spare is above every fd number of the image
        for record, spare, fetched in placed:
            calls.append((kernel.NR["dup3"], (spare, record["fd"], O_CLOEXEC if record["cloexec"] else 0),
                          f"dup3 to fd {record['fd']}"))
            if fetched:
                calls.append((kernel.NR["close"], (spare,), "close"))
        run_all(builder.batch(), calls)
        for record in fds:
            file = self.files[record["file"]]
            if "fown" in file and file["id"] not in self.owned:
                self.owned.add(file["id"])
                fown.give(inj, record["fd"], file["fown"], self.warnings, f"process {ns_pid}, fd {record['fd']}")
        self._fill_epolls(builder, fds)
        return spares

    @staticmethod
    def _fetch(builder, others: list[tuple[dict, int, int]]) -> list[int]:
        """Our fds of files that other processes hold, `others` (fd record, holder, its spare
        there), each at a spare number here: pidfd_getfd in three trips whatever their count
        (a pidfd per holder; the fds; each moved above the image's numbers, as it may have
        landed on one). One trip per call (4 round trips of ptrace each) took 0.3-0.5 ms an
        fd: minutes for a forked server's workers inheriting hundreds of fds each."""
        if not others:
            return []
        holders = sorted({holder for _, holder, _ in others})
        pidfds = dict(zip(holders, run_all(builder.batch(), [(_NR_PIDFD_OPEN, (holder, 0), "pidfd_open")
                                                             for holder in holders])))
        got = run_all(builder.batch(), [(_NR_PIDFD_GETFD, (pidfds[holder], spare, 0), "pidfd_getfd")
                                        for _, holder, spare in others])
        closing = [(kernel.NR["close"], (pidfd,), "close") for pidfd in pidfds.values()]
        return run_all(builder.batch(), _to_spares(got, builder.spare_base) + closing)[:2 * len(got):2]

    def reopen_thread_pidfds(self, builder) -> None:
        """The pidfds the process holds of its own threads (zdtm pidfd_of_thread), now that
        its threads exist: opened and put in place of those made meanwhile (a pidfd of a
        thread of another process of the image must be made after that process's threads:
        it is refused as not in the image)."""
        for record in builder.meta["fds"]:
            file = self.files[record["file"]]
            if file["id"] in self.thread_pidfds:
                fd = builder.inj.check(_NR_PIDFD_OPEN, file["pid"], file["flags"] & (O_NONBLOCK | O_EXCL),
                                       what=f"pidfd_open of thread {file['pid']}")
                builder.inj.check(kernel.NR["dup3"], fd, record["fd"], O_CLOEXEC if record["cloexec"] else 0,
                                  what=f"dup3 to fd {record['fd']}")
                builder.inj.check(kernel.NR["close"], fd, what="close")

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
            fd = inotify.make(inj, record, self.remap, self.warnings, ns_pid,
                              lambda file_id: self.local_fd(builder, file_id, base))
        elif kind == "pidfd":
            fd = self._make_pidfd(builder, record)
        elif kind == "deleted" and "same_as" in record:     # another open file description of it
            fd = self._reopen(builder, self.local_fd(builder, record["same_as"], base), record["flags"])
            inj.check(kernel.NR["lseek"], fd, record["pos"], 0, what="lseek")
        elif kind == "deleted":
            fd = self._make_deleted(builder, record)
        elif kind == "memfd":
            fd = inj.check(_NR_MEMFD_CREATE, inj.put(record["name"].encode()[:200] + b"\0"), _memfd_flags(record),
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
        elif kind == "mqueue_fd":
            fd = posix_mqueue.open_in(inj, self._mqueue(record["queue"]), record["flags"])
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
            elif kind == "tty" and _system_terminal(path):
                flags |= O_NOCTTY        # the same console or serial line again, by its path
            elif kind == "tty":
                self.warnings.append(f"process {ns_pid}: the terminal {record['path']} is now /dev/null")
                path = "/dev/null"
            try:
                if kind == "dir" and removed_dirs.is_removed(path):
                    fd = self._open_removed_directory(builder, path, flags)
                elif kind == "device" and "rdev" in record:
                    fd = self._make_deleted_device(builder, path, record, flags)
                elif kind == "file" and _PROC_PID_FILE.match(path) and _has_own_proc(builder.tid):
                    # a file of a process outside the image, as the host's /proc numbers it
                    if (fd := self._hand_over(builder, path, flags)) < 0:
                        raise CheckpointError(f"cannot reopen {path}")
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
                elif kind == "tty":
                    self.warnings.append(f"process {ns_pid}: the terminal {path} could not be opened again: "
                                         "it is /dev/null now")
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
        ends = [other for other in self.files.values() if other["kind"] == "fifo" and other["path"] == record["path"]]
        _refill_pipe(keeper, record, self.read_blob(record["data"]), ends, f"the FIFO {path}")

    def _make_deleted_device(self, builder, path: str, record: dict, flags: int) -> int:
        """An unlinked device node (of a device any process may open: /dev/null and friends)
        made again with its mode and number under a fresh name, opened and unlinked."""
        original = path[: -len(procfs.DELETED)]
        name = os.path.join(_nearest_directory(os.path.dirname(original)), f".slsfs-restored-{os.urandom(6).hex()}")
        os.mknod(name, record["mode"], os.makedev(*record["rdev"]))
        try:
            os.chmod(name, stat.S_IMODE(record["mode"]))      # (the umask took bits off)
            return builder.open(name, flags, f"the unlinked device node {original}")
        finally:
            os.unlink(name)

    def _make_deleted(self, builder, record: dict) -> int:
        """An unlinked file made again where it was: under its own name if that is free (and
        unlinked at once: /proc/PID/fd names it "<its path> (deleted)" again), else
        O_TMPFILE (as one made so was), or where the file system does not offer it (FUSE),
        a file created under a fresh name and unlinked at once; then opened again with the
        original's flags, unless it was made with O_TMPFILE too. A directory removed since
        (a temporary directory cleaned up while a file in it stays open) is replaced by its
        nearest ancestor that exists."""
        original = record["target"][: -len(procfs.DELETED)]
        directory = _nearest_directory(self.remap(os.path.dirname(original)))
        what = f"the unlinked file {original}"
        as_made = record["flags"] & O_TMPFILE == O_TMPFILE and record["flags"] & O_ACCMODE == O_WRONLY
        fd = -errno.EEXIST
        named = os.path.join(directory, os.path.basename(original))
        if record["flags"] & O_TMPFILE != O_TMPFILE and directory == self.remap(os.path.dirname(original)):
            fd = builder.inj.call(kernel.NR["openat"], -100, builder.inj.put(named.encode() + b"\0"),
                                  O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW, record["mode"])
            if fd >= 0:
                os.unlink(named)
        if fd < 0:
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
        fd, pidfd = -1, inj.call(_NR_PIDFD_OPEN, record["pid"], 0)
        if pidfd >= 0:
            try:
                fd = self._hand_over(builder, f"/proc/{_fdinfo_field(builder.tid, pidfd, 'Pid')}{record['rest']}",
                                     flags)
            except OSError:
                pass
            finally:
                inj.check(kernel.NR["close"], pidfd, what="close(pidfd)")
        if fd < 0:
            self.warnings.append(f"process {builder.meta['pid']}: {record['target']} (a file of process "
                                 f"{record['pid']}, not in the image) is /dev/null now")
            return builder.open("/dev/null", flags, "/dev/null")
        if record["pos"]:
            inj.check(kernel.NR["lseek"], fd, record["pos"], 0, what=f"lseek({record['target']})")
        return fd

    @staticmethod
    def _hand_over(builder, path: str, flags: int) -> int:
        """`path` opened by the restorer (its /proc is the host's) and handed to the process:
        its fd there, or -1 if the restorer cannot open it."""
        try:
            ours = os.open(path, flags | os.O_CLOEXEC)
        except OSError:
            return -1
        try:
            return sockets.push_fd(builder.inj, builder.tid, ours)
        finally:
            os.close(ours)

    def _make_pidfd(self, builder, record: dict) -> int:
        """A pidfd of the image's process `pid` (every process exists by now), or, for one
        that had exited, of a process that has exited (a short-lived child of ours). One of
        a thread (PIDFD_THREAD) of the process is a pidfd of the process until its threads
        exist (`reopen_thread_pidfds`)."""
        flags = record["flags"] & (O_NONBLOCK | O_EXCL)       # PIDFD_NONBLOCK, PIDFD_THREAD
        if record["pid"] > 0:
            fd = builder.inj.call(_NR_PIDFD_OPEN, record["pid"], flags)
            if fd == -errno.ESRCH and flags & O_EXCL:
                self.thread_pidfds.add(record["id"])
                return builder.inj.check(_NR_PIDFD_OPEN, builder.meta["pid"], flags & O_NONBLOCK,
                                         what="pidfd_open (of itself, until its threads exist)")
            if fd < 0:
                raise CheckpointError(f"process {builder.meta['pid']} holds a pidfd of process {record['pid']}, "
                                      f"which is not in the image: {os.strerror(-fd)}")
            return fd
        ours = os.pidfd_open(self._exited(record.get("exited", f"record {record['id']}")))
        try:
            fd = sockets.push_fd(builder.inj, builder.tid, ours)
        finally:
            os.close(ours)
        builder.inj.check(_NR_FCNTL, fd, F_SETFL, flags & O_NONBLOCK, what="F_SETFL on a pidfd")
        return fd

    def _exited(self, identity: int | str) -> int:
        """A process of ours that has exited, not reaped until close() (so pidfds can be
        opened on it), one for each process that had exited in the image (`identity`: its
        pidfds' inode at the checkpoint): its pidfds share their inode again, and those
        of different ones do not (as pidfs numbers them)."""
        if identity not in self.exited_children:
            child = subprocess.Popen(["true"])
            self.exited_children[identity] = child
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        return self.exited_children[identity].pid

    def _make_socket(self, builder, record: dict, base: int) -> int:
        """A socket of the process (made by _make_sockets, or now) at a spare number (from
        `base` on), which the restorer binds/listens/connects (borrowed) and gives its status
        flags. A TCP connection with both ends in the image is made in repair mode
        (tcp_repair.py), left there until `finish`; if that fails (the original, still
        running, holds the address pair: a clone) it comes back closed."""
        inj, owner = builder.inj, f"process {builder.meta['pid']}"
        spare = self.new_sockets.pop(record["id"], None)
        if record["state"] == "established" and (held := self._take_held(builder, record, base)) is not None:
            if spare is not None:
                inj.check(kernel.NR["close"], spare, what="close")
            return held
        if spare is None:
            spare = self._new_socket(builder, record, base)
        if record["state"] == "established":
            try:
                self._repair(builder, spare, record)
            except OSError as exc:
                inj.check(kernel.NR["close"], spare, what="close")
                self.unrepaired.add(connection_ends(record))
                record = {**record, "state": "closed"}
                self.warnings.append(f"{owner}: the connection {netsockets.show(record)} could not be made again "
                                     f"as it was ({exc}): it is restored closed")
                spare = self._new_socket(builder, record, base)
            else:
                if not self._peer_in_image(record):     # its checkpoint killed it, and no holder has it
                    self.warnings.append(f"{owner}: the TCP connection {netsockets.show(record)} is made again from "
                                         "the image: no holder has it any more (its --hold time passed, or the "
                                         "holder or the machine stopped); if its peer reset it or sent bytes since "
                                         "the checkpoint, it will not carry on")
        with sockets.borrow(builder.tid, spare) as sock:
            if record["state"] not in ("established", "connecting"):
                shares = netsockets.sharing(record) in self.shared_addresses
                kept = netsockets.rebuild(sock, record, self.remap, share_port=self.share_ports or shares,
                                          cwd=builder.meta["cwd"], root=builder.meta["root"])
                if kept is not None:
                    self.unlinked_names[record["id"]] = kept
                if shares and not self.share_ports and not record["options"].get("SO_REUSEPORT"):
                    self.reuseport_off.append(sock.dup())   # once the others are bound too
            if record.get("data"):      # version 10: datagrams queued to a bound Unix socket, sent
                self._refill_datagrams(builder, record, base)   # before it connects (then only its peer may)
            if "connected" in record:       # version 12
                self._connect(builder, sock, record, base)
            fcntl.fcntl(sock.fileno(), F_SETFL, record["flags"])   # (the file's flags: shared with our dup)
        if warning := netsockets.warning(record, owner):
            self.warnings.append(warning)
        _set_peek_offset(builder.tid, spare, record)
        return spare

    def _take_held(self, builder, record: dict, base: int) -> int | None:
        """The very socket of a connection held since its checkpoint killed its process
        (tcp_hold.py), given to the process at a spare number (its file status flags and
        options are its own), left in repair mode until `finish`; None if none is held."""
        sock = tcp_hold.take(record)
        if sock is None:
            return None
        self.resuming.append((sock, record))
        return self._spare(builder, sockets.push_fd(builder.inj, builder.tid, sock.fileno()), base)

    def _refill_datagrams(self, builder, record: dict, base: int) -> None:
        """Datagrams queued to a bound Unix socket, sent again with their fds and
        credentials from an unnamed socket that its process makes and connects to it by
        its address (resolved there: its root, its cwd), borrowed by us; one that came from
        a named socket, from a socket of ours bound to that name if it is free
        (inflight.NamedSenders; else without its sender's address: a warning says so)."""
        pieces = inflight.queued_pieces(record, self.read_blob(record["data"]))
        if not pieces:
            return
        inj, owner = builder.inj, f"process {builder.meta['pid']}"
        where = netsockets.show_address(record)
        fd = inj.check(_NR_SOCKET, socket.AF_UNIX, socket.SOCK_DGRAM | SOCK_CLOEXEC, 0, what="socket")
        target = self._reach(builder, record, bytes.fromhex(record["address"]), self.remap)
        named = inflight.NamedSenders(target, self.remap)
        try:
            with sockets.borrow(builder.tid, fd) as sender:
                try:
                    sender.connect(target)
                except OSError as exc:
                    self.warnings.append(f"{owner}: {len(pieces)} datagram(s) queued on {where} were dropped "
                                         f"(cannot send to it again: {exc.strerror})")
                    return
                sender.setblocking(False)   # a queue longer than the receiver now takes: not a hang
                try:
                    inflight.refill(sender, pieces, lambda ids: self._ours(builder, ids, base),
                                    lambda pid: self._sender_pid(builder, pid), named)
                except BlockingIOError:
                    self.warnings.append(f"{owner}: datagrams queued on {where} were dropped: its queue is full")
                if missing := named.missing(pieces):
                    self.warnings.append(f"{owner}: {missing} datagram(s) queued on {where} come back without "
                                         "their sender's address (the name is in use now, or relative)")
        finally:
            named.close()
            inj.check(kernel.NR["close"], fd, what="close")

    def _connect(self, builder, sock: socket.socket, record: dict, base: int) -> None:
        """Connect a Unix socket again to the socket its record names (`connected`): a
        listener that had not accepted it yet (state `connecting`), or the datagram server
        it sends to: made first if it is in the image (in this process if need be), and
        reached at the address it is bound to again; else by its recorded address. A
        datagram socket that cannot reach it is left unconnected, with a warning."""
        target = record["connected"]
        server = next((f for f in self.files.values() if f["kind"] == "socket" and f["ino"] == target["ino"]), None)
        try:
            if server is not None and server["id"] == record["id"]:    # connected to itself
                name, remap = sock.getsockname(), (lambda path: path)
            elif server is not None:    # made first; its name as bound again (remapped already)
                with sockets.borrow(builder.tid, self.local_fd(builder, server["id"], base)) as made:
                    name, remap = made.getsockname(), (lambda path: path)
            elif target["address"] is not None:
                name, remap = bytes.fromhex(target["address"]), self.remap
            else:
                raise OSError(errno.ENOENT, "it has no address")
            sock.connect(self._reach(builder, server, name.encode() if isinstance(name, str) else name, remap))
        except OSError as exc:
            where = netsockets.show_address({"address": target["address"], "family": "unix"})
            if record["state"] == "connecting":
                raise CheckpointError(f"process {builder.meta['pid']}: cannot connect again to the listener "
                                      f"{where}: {exc.strerror}") from None
            self.warnings.append(f"process {builder.meta['pid']}: a unix dgram socket is no longer connected to "
                                 f"{where} ({exc.strerror})")

    def _reach(self, builder, server: dict | None, name: bytes, remap) -> bytes | str:
        """Where the restorer connects to reach the Unix socket `server` of the image (None:
        one outside it) bound to `name`: through our O_PATH fd of its file if that file was
        gone at the checkpoint (bound again and removed at once: the name may be another
        file's by now, a FIFO or a socket bound there since), else by its name."""
        kept = self.unlinked_names.get(server["id"]) if server is not None else None
        return f"/proc/self/fd/{kept}" if kept is not None else self._unix_address(builder, name, remap)

    def _unix_address(self, builder, name: bytes, remap) -> bytes | str:
        """Where the restorer connects to reach the Unix socket named `name` (as bound): an
        abstract name as is, a path through `remap`, a relative path from the process's
        working directory at the checkpoint (the process has not got it back yet), a path in
        the process's root if it has one of its own (a --root group's names are its)."""
        if name[:1] == b"\0":
            return name
        root = builder.meta["root"]
        return netsockets.rooted_path(self.remap(root) if root != "/" else None, self.remap(builder.meta["cwd"]),
                                      os.fsdecode(name), remap)

    def _new_socket(self, builder, record: dict, base: int) -> int:
        return self._spare(builder, builder.inj.check(_NR_SOCKET, *_socket_args(record), what="socket"), base)

    def _repair(self, builder, fd: int, record: dict) -> None:
        """Give socket `fd` the options and, in repair mode, the TCP state of `record`;
        our dup of it waits in `repairing` for `finish`."""
        sock = sockets.borrow(builder.tid, fd)
        try:
            netsockets.rebuild(sock, record, self.remap, cwd=builder.meta["cwd"], root=builder.meta["root"])   # the options
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
                 if f["kind"] == "socket" and (f.get("tcp") or f.get("finished") and f["peer"] and f["address"])]
        try:
            tcp_repair.clear_leftovers(pairs)
        except OSError:     # not allowed (no CAP_NET_ADMIN): the repair says so itself
            pass

    def finish(self) -> None:
        """Once every process has its files and mappings: memfds get their seals, and the
        repaired TCP connections get the bytes they had sent unacknowledged (tcp_repair.
        load_sent), then leave repair mode (a packet sent before its peer existed would have
        been answered with a reset) and send what their application had written but the
        kernel not yet sent; one whose other end was restored closed is reset."""
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
        while self.reuseport_off:
            with self.reuseport_off.pop() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        for sock, record in self.repairing:     # every end made: their sent bytes (tcp_repair.load_sent)
            if not self._abandoned(record):
                try:
                    tcp_repair.load_sent(sock, record["tcp"], self.read_blob)
                except OSError as exc:
                    raise CheckpointError(f"the connection {netsockets.show(record)} could not be resumed: "
                                          f"{exc}") from None
        while self.resuming:
            sock, record = self.resuming.pop()
            with sock:
                tcp_repair.resume(sock, record["options"].get("SO_REUSEADDR", 0))
        while self.repairing:
            sock, record = self.repairing.pop()
            if self._abandoned(record):
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

    def _peer_in_image(self, record: dict) -> bool:
        """Whether the other end of connection `record` is a socket of the image."""
        return connection_ends(record)[::-1] in self._connections_in_image

    @functools.cached_property
    def _connections_in_image(self) -> set[tuple[tuple, tuple]]:
        """(address, peer) of every inet connection of the image (made once: a server's
        hundreds of connections are each looked up here)."""
        return {connection_ends(f) for f in self.files.values()
                if f["kind"] == "socket" and f.get("peer") and f["family"] in ("inet", "inet6")}

    def _abandoned(self, record: dict) -> bool:
        """Whether the other end of repaired connection `record` could not be made again."""
        return connection_ends(record)[::-1] in self.unrepaired

    def _make_unix_pair(self, builder, record: dict, base: int) -> list[int]:
        """A new socketpair: this end, its peer's records on the other, each refilled. Made
        under this end's peer credentials (SO_PEERCRED: the pid and creds of the socketpair's
        maker, or of the process that connected). A maker that is not in the image (it has
        exited, as a child that made the pair for its parent has) is stood in for by a
        short-lived process with its PID, which makes the pair; SO_PEERCRED then names that
        PID, which no process has, as it did. Otherwise the process being built makes it
        (a maker of the image that is another process: the pair names the builder)."""
        ns_pid = builder.meta["pid"]
        maker = record.get("maker", ns_pid)     # version 26
        stand_in = self.stand_in(maker) if maker != ns_pid else None
        made = _socketpair_as(stand_in or builder.inj, SOCKET_TYPES[record["type"]] | SOCK_CLOEXEC,
                              *record.get("peer_creds", (0, 0)))
        if stand_in is not None:
            made = [_moved(stand_in.tid, fd, builder) for fd in made]
        ends = [self._spare(builder, fd, base) for fd in made]
        peers = [f for f in self.files.values() if f["kind"] == "unix_pair" and f["ino"] == record["peer"]]
        for end, this in [(ends[0], record)] + [(ends[1], p) for p in peers]:
            self.made[this["id"]] = (ns_pid, end)
            builder.inj.check(_NR_FCNTL, end, F_SETFL, this["flags"], what="F_SETFL on a socket")
            if this.get("passcred"):
                with sockets.borrow(builder.tid, end) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        for other_end, this in [(ends[1], record)] + [(ends[0], p) for p in peers]:
            pieces = inflight.queued_pieces(this, self.read_blob(this["data"]))
            if pieces:  # bytes or messages queued for this end were sent by its peer
                with sockets.borrow(builder.tid, other_end) as sender:
                    inflight.refill(sender, pieces, lambda ids: self._ours(builder, ids, base),
                                    lambda pid: self._sender_pid(builder, pid))
        for end, this in [(ends[0], record)] + [(ends[1], p) for p in peers]:   # once refilled
            _set_peek_offset(builder.tid, end, this)
            if this.get("shutdown"):
                with sockets.borrow(builder.tid, end) as sock:
                    netsockets.shut_down(sock, this["shutdown"])
        if record.get("outside"):       # version 29: its other end, a spare, is closed with the spares
            self.warnings.append(f"process {ns_pid}: its Unix connection socket:[{record['ino']}] to a process "
                                 "outside the image is restored ended by that process (what it had sent is "
                                 "read first)")
        return ends

    def _ours(self, builder, file_ids: list[int], base: int) -> list[int]:
        """Our fds of image files (files in flight), made in the process being built if
        they are not made yet."""
        return [kernel.borrow_fd(builder.tid, self.local_fd(builder, file_id, base)) for file_id in file_ids]

    def _sender_pid(self, builder, pid: int) -> int:
        """The pid, in our namespace, of the image's process `pid` (as the process being
        built numbers it): the sender named by a queued message's credentials; ours (which
        its namespace sees as 0) if it is 0 or not restored (yet), with a warning then."""
        if pid:
            pidfd = builder.inj.call(_NR_PIDFD_OPEN, pid, 0)
            if pidfd >= 0:
                try:
                    return int(_fdinfo_field(builder.tid, pidfd, "Pid"))
                finally:
                    builder.inj.check(kernel.NR["close"], pidfd, what="close(pidfd)")
            self.warnings.append(f"process {builder.meta['pid']}: a message queued to it names process {pid} as "
                                 "its sender, which is not restored (yet): it names the restorer now")
        return os.getpid()

    def _make_pipe(self, builder, record: dict, base: int) -> list[int]:
        inj, ns_pid = builder.inj, builder.meta["pid"]
        inj.check(_NR_PIPE2, inj.scratch, 0, what="pipe2")
        read_fd, write_fd = struct.unpack("ii", inj.read(inj.scratch, 8))
        read_spare, write_spare = self._spare(builder, read_fd, base), self._spare(builder, write_fd, base)
        ends = [other for other in self.files.values() if other["kind"] == "pipe" and other["pipe"] == record["pipe"]]
        refill = os.open(f"/proc/{builder.tid}/fd/{write_spare}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            _refill_pipe(refill, record, self.read_blob(record["data"]), ends, f"pipe {record['pipe']}")
        finally:
            os.close(refill)
        # each open file description of the pipe: the first of each direction is an end of
        # pipe2; more (the pipe reopened through /proc/PID/fd) are opened again, since
        # their flags (O_NONBLOCK) are their own
        unused = {O_RDONLY: read_spare, O_WRONLY: write_spare}
        spares = [read_spare, write_spare]
        for other in ends:
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


def _socketpair_as(inj, sock_type: int, uid: int, gid: int) -> tuple[int, int]:
    """A Unix socketpair made in the (root) process `inj` drives with its effective uid and
    gid set to `uid` and `gid` around the call (SO_PEERCRED names them): its two fds."""
    if gid:
        inj.check(kernel.NR["setresgid"], -1, gid, -1, what="setresgid (a socketpair's credentials)")
    if uid:
        inj.check(kernel.NR["setresuid"], -1, uid, -1, what="setresuid (a socketpair's credentials)")
    try:
        inj.check(_NR_SOCKETPAIR, socket.AF_UNIX, sock_type, 0, inj.scratch, what="socketpair")
    finally:
        if uid:
            inj.check(kernel.NR["setresuid"], -1, 0, -1, what="setresuid (back to root)")
        if gid:
            inj.check(kernel.NR["setresgid"], -1, 0, -1, what="setresgid (back to root)")
    return struct.unpack("ii", inj.read(inj.scratch, 8))


def _moved(tid: int, fd: int, builder) -> int:
    """fd `fd` of task `tid`, given to the process being built: its number there."""
    ours = kernel.borrow_fd(tid, fd)
    try:
        return sockets.push_fd(builder.inj, builder.tid, ours)
    finally:
        os.close(ours)


def _set_peek_offset(tid: int, fd: int, record: dict) -> None:
    """SO_PEEK_OFF as the program had set it (version 10), once the queue is refilled."""
    if "peek_offset" in record:
        with sockets.borrow(tid, fd) as sock:
            sock.setsockopt(socket.SOL_SOCKET, sockets.SO_PEEK_OFF, record["peek_offset"])


def _socket_args(record: dict) -> tuple[int, int, int]:
    """socket()'s arguments for a socket record."""
    family = {name: number for number, name in netsockets.FAMILIES.items()}[record["family"]]
    return family, SOCKET_TYPES[record["type"]] | SOCK_CLOEXEC, record["protocol"]


def _to_spares(fds: list[int], base: int) -> list[tuple[int, tuple[int, ...], str]]:
    """The calls that move each fd to a spare number (from `base` on): F_DUPFD_CLOEXEC's
    results (even indices) are the spares."""
    return [call for fd in fds for call in ((_NR_FCNTL, (fd, F_DUPFD_CLOEXEC, base), "F_DUPFD_CLOEXEC"),
                                            (kernel.NR["close"], (fd,), "close"))]
