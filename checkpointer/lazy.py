"""Lazy restore: the restored process runs at once; its memory comes in on first touch.

What: `PageServer.start(image)` forks a page server, which forks a page guard
(pageguard.py) before it takes over any process.
The server reads the image through the fork's copy of the restorer's store when the
restorer has one thread (the copy is consistent), else (the daemon, whose other threads
may be in the middle of using its store) it opens the store again, read-only; either
on first use, after it has taken over every process. For each restored
process, `arm()` (while it is still a stopped stub with its mappings made) creates a
userfaultfd inside it (injected userfaultfd(), taken with pidfd_getfd), registers its
private anonymous mappings in MISSING mode and hands the fd to the server; their pages
are not written by restore. The server then answers every fault with the image's page
(UFFDIO_COPY; a page the image does not hold is zero: UFFDIO_ZEROPAGE), and in between
pushes the remaining pages in the background, in runs. When every page is in, it closes
the userfaultfds (the kernel unregisters the ranges) and exits.
Why: restore no longer reads and writes every page before the process runs, so its
time does not grow with memory (a 2 GiB process runs in tens of milliseconds).

Correctness under a running process: the server asks for the non-cooperative events
(FORK, REMAP, REMOVE, UNMAP), which the kernel makes the process wait for: pages of a
range unmapped or dropped (MADV_DONTNEED) are forgotten (a later fault there is zero),
pages of a range moved by mremap move with it, and a fork gives a new userfaultfd for
the child, served from a copy of what the parent still had to receive.
If the server dies (SIGKILL, an error) before a process has all its pages, that process
is KILLED (SIGKILL), never left to read zeros: the guard holds a copy of each
userfaultfd, so a fault waits until the guard has killed it (pageguard.py); a server
that fails with an error also kills them itself. The image stays as it was in the store.
While a process is served, /run/slsfs/lazy/<host pid> exists and is locked by the
server (before `confirm()` returns): `check_served` (called by every capture) refuses to
checkpoint it, because pages not yet in would be missing from the image.

Simplifications: only private anonymous mappings other than stacks are lazy (file
mappings, memfds, stacks, locked memory and mappings a fork wipes or leaves out (a
forked child's copy of what is still to come would be wrong) are written at restore);
the server sees the store as it was when it opened it, so the image's chunks must not
move while it runs (the daemon runs no GC meanwhile); a child forked before every page is in is served correctly but
not marked, so it must not be checkpointed until the server has exited
(`Restored.wait_pages_in`).
"""
from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import fcntl
import gc
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path

from objectstore import Store
from objectstore.tree import Entry

from . import pageguard
from .errors import CheckpointError
from .image import StoredImage, block_ids
from .inject import Injector
from .kernel import PAGE_SIZE
from .uffd import UFFD_API, UFFDIO_API, UFFDIO_REGISTER, iowr, raw_ioctl, take_from
from .uffd import ioctl as _ioctl

UFFDIO_WAKE = (2 << 30) | (16 << 16) | (0xAA << 8) | 0x02  # _IOR(UFFDIO, 0x02, struct uffdio_range)
UFFDIO_COPY = iowr(0xAA, 0x03, 40)
UFFDIO_ZEROPAGE = iowr(0xAA, 0x04, 32)
UFFDIO_REGISTER_MODE_MISSING = 1
FEATURES = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6)  # EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP
EVENT_PAGEFAULT, EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP = 0x12, 0x13, 0x14, 0x15, 0x16
MSG_SIZE = 32
MARK_DIR = Path("/run/slsfs/lazy")
_PAGES = b"pages/"


def lazy_vma(vma: dict) -> bool:
    """Is this mapping (image metadata) filled on demand by a lazy restore?"""
    return (vma["kind"] == "anon" and not vma["shared"] and not vma["growsdown"]
            and not EAGER_VM_FLAGS.intersection(vma.get("vm_flags", ())))


# mappings written at restore even when lazy: a fork's copy of what is still to be served
# would be wrong for these, and locked memory is all in at once (mlock)
EAGER_VM_FLAGS = {"wipeonfork", "dontfork", "droppable", "locked"}


def dropped(vma: dict) -> bool:
    """Is this mapping (image metadata) MAP_DROPPABLE memory, which a restore leaves empty?
    The kernel may free its pages at any time, and what programs keep there (glibc's
    getrandom state) must not be the same in two processes restored from one image."""
    return "droppable" in vma.get("vm_flags", ())


def lazy_ranges(meta: dict) -> list[tuple[int, int]]:
    return [(v["start"], v["end"]) for v in meta["vmas"] if lazy_vma(v)]


def served_ranges(meta: dict) -> list[tuple[int, int]]:
    """The ranges a page server fills: `lazy_ranges` less the pages holding the threads'
    rseq areas. The kernel writes an rseq area when restore registers it, from inside each
    thread: a fault there would make the restore wait for the server, once per thread
    (3-10 ms each on a busy machine); those few pages are written by restore instead."""
    eager = sorted({t["rseq"]["pointer"] // PAGE_SIZE * PAGE_SIZE
                    for t in meta["threads"] if t.get("rseq", {}).get("pointer")})
    ranges = []
    for start, end in lazy_ranges(meta):
        for page in eager:
            if start <= page < end:
                if start < page:
                    ranges.append((start, page))
                start = page + PAGE_SIZE
        if start < end:
            ranges.append((start, end))
    return ranges


def check_served(pid: int) -> None:
    """Raise CheckpointError if `pid` is a lazily restored process whose pages are not all in.
    (Every process, every stop: its mark's path is a plain string, not a Path, whose
    joining cost more than the open.)"""
    mark = f"{MARK_DIR}/{pid}"
    try:
        fd = os.open(mark, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # succeeds only if no server holds it: stale
    except BlockingIOError:
        server = os.pread(fd, 32, 0).decode(errors="replace").strip()
        raise CheckpointError(f"process {pid} was restored lazily and its memory is still coming in from page "
                              f"server {server}: wait until that process has exited (Restored.wait_pages_in), "
                              "then checkpoint it") from None
    finally:
        os.close(fd)


class PageServer:
    """The restorer's handle on a forked page server (which forks its own guard)."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid, self.sock = pid, sock
        self.served: list[int] = []  # host pids handed to the server
        self._unconfirmed = 0  # handed over, the server's "ok" not read yet
        self._frozen = True  # our heap's objects are out of the collector's reach (see start)
        self.exit_code: int | None = None  # once reaped (as subprocess gives it); not 0: it failed

    @classmethod
    def start(cls, image, *, quiescent: bool = False) -> "PageServer":
        """Fork a server for `image` (a StoredImage, or any image with `store_path` and
        `root`); it forks its guard itself (one fork on the restorer's path, not two).
        `quiescent`: the caller is the one thread that uses the StoredImage's store (a
        daemon's other threads never touch it), so the fork's copy of the store is
        consistent and the server reads through it even from a multi-threaded restorer."""
        path = getattr(image, "store_path", None) or getattr(getattr(image, "store", None), "path", None)
        if path is None or not hasattr(image, "root"):
            raise CheckpointError("a lazy restore needs an image read from a store (load_image)")
        root = bytes(image.root)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if isinstance(image, StoredImage) and (quiescent or threading.active_count() == 1):
            # a fork of a one-thread restorer: its copy of the store is consistent, and
            # reading through it saves the reopening (a scan of the active pack)
            opener, packs = (lambda: image), Path(path).resolve() / "packs"
        else:  # another thread of the restorer may be in the middle of using it
            opener, packs = (lambda: StoredImage(Store.open(path, readonly=True), root)), None
        # the server shares our heap copy-on-write: a collection (ours or its) writes to
        # every object it visits, copying those pages while the restore goes on (a full
        # one over a store's index: 10-15 ms of page copies wherever it fell). The objects
        # stay frozen (never collected) until the server has exited (reap).
        gc.freeze()
        try:
            pid = _fork(lambda: _serve(theirs, _OnFirstUse(opener)), keep=[theirs], packs=packs,
                        log=Path(path) / PAGE_SERVER_LOG)
        except BaseException:
            gc.unfreeze()
            raise
        theirs.close()
        return cls(pid, ours)

    def arm(self, inj: Injector, host_pid: int, ns_pid: int, ranges: list[tuple[int, int]], *,
            namespace_init: int | None = None) -> None:
        """Inside the stopped process: a userfaultfd over `ranges` (MISSING), handed to the
        server (call `confirm()` before the process runs). `namespace_init`: the host pid
        of its PID namespace's init, killed too if the server dies."""
        uffd = take_from(inj, inj.tid, "lazy restore")
        try:
            api = (ctypes.c_uint64 * 3)(UFFD_API, FEATURES, 0)
            _ioctl(uffd, UFFDIO_API, api, "UFFDIO_API (lazy restore)")
            for start, end in ranges:
                reg = (ctypes.c_uint64 * 4)(start, end - start, UFFDIO_REGISTER_MODE_MISSING, 0)
                _ioctl(uffd, UFFDIO_REGISTER, reg, f"UFFDIO_REGISTER (missing) of {start:#x}")
            _send_space(self.sock, uffd, {"host_pid": host_pid, "pid": ns_pid, "ranges": ranges,
                                          "init": namespace_init})
            self.served.append(host_pid)
            self._unconfirmed += 1
        finally:
            os.close(uffd)

    def confirm(self) -> None:
        """Wait until the server holds (has marked, and handed its guard) every process
        armed so far. (Its store is opened meanwhile: not one wait per process.)"""
        while self._unconfirmed:
            if self.sock.recv(16) != b"ok":
                raise CheckpointError("the lazy restore's page server failed (see its message above)")
            self._unconfirmed -= 1

    def started(self) -> None:
        """Every process is handed over: the server exits once all their pages are in."""
        self.confirm()
        self.sock.close()

    def kill(self) -> None:
        self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.reap(None)
        for pid in self.served:  # a killed server leaves its marks behind
            with contextlib.suppress(FileNotFoundError):
                (MARK_DIR / str(pid)).unlink()

    def reap(self, timeout: float | None) -> bool:
        """Wait (up to `timeout` s; None = forever) for the server to exit (it waits for its
        guard first); True once it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG if deadline is not None else 0)
            except ChildProcessError:
                done, status = True, None
            if done:
                if status is not None:
                    self.exit_code = os.waitstatus_to_exitcode(status)
                if self._frozen:  # nothing shares our heap any more
                    self._frozen = False
                    gc.unfreeze()
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def _fork(body, keep: list[socket.socket], packs: Path | None = None, log: Path | None = None) -> int:
    """Fork a child that runs `body()` with only `keep` (and stdio, and the pack files
    under `packs`) open, in a session of its own (not killed with the restorer's process
    group), then exits; an error it meets is told on its stderr, `log` if that was a pipe
    (see _leave_waiting_readers)."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        _leave_waiting_readers(log)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        _close_fds_but({s.fileno() for s in keep}, packs)
        body()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - report anything, then exit
        with contextlib.suppress(OSError, ValueError):
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} sls page server (pid {os.getpid()}): {exc}",
                  file=sys.stderr, flush=True)
    finally:
        os._exit(code)


PAGE_SERVER_LOG = "page-server.log"   # in the store's directory: a lazy restore's errors, when
# the restoring command's stderr was a pipe (a daemon's is its log file: they go there)


def _leave_waiting_readers(log: Path | None) -> None:
    """In a forked child: stdout on /dev/null (the server prints nothing there), and stderr
    on `log` (appended to; /dev/null if it cannot be opened) when it is a pipe or a socket.
    A command whose output is read to its end (`out=$(sls restore IMAGE --lazy --detach)`, a
    subprocess capturing it) would otherwise wait until every page is in: the child held
    the command's stdio. A terminal or a file (a daemon's log) keeps the child's messages,
    and so does `log`: a server that fails while serving (a corrupt chunk) kills the
    processes it serves, and the user must be able to read why."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        with contextlib.suppress(OSError):          # (a log that cannot be opened: /dev/null)
            if stat.S_ISFIFO(os.fstat(2).st_mode) or stat.S_ISSOCK(os.fstat(2).st_mode):
                os.dup2(devnull, 2)
                if log is not None:                 # owner only: it may name the image's files
                    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    os.dup2(fd, 2)
                    os.close(fd)
    finally:
        os.close(devnull)


class _OnFirstUse:
    """The image, opened when first read (a fault, or the push): the server acknowledges
    the processes first, so they run (and wait in their first fault) meanwhile."""

    def __init__(self, opener):
        self._opener, self._image = opener, None

    def _opened(self) -> StoredImage:
        if self._image is None:
            self._image = self._opener()
        return self._image

    def get_entry(self, key: bytes) -> Entry | None:
        return self._opened().tree.get_entry(key)

    def entries(self, start: bytes, end: bytes):
        return self._opened().tree.entries(start, end)

    def read_pages(self, cids: list[bytes]) -> list[bytes]:
        return self._opened().read_pages(cids)

    def index_some(self) -> bool:
        """More of the store's chunk index (Store.index_some); whether more is left."""
        return self._opened().store.index_some()


def _serve(sock: socket.socket, image: _OnFirstUse) -> None:
    """The server's body: its guard forked first (before any process is acknowledged),
    then the loop; on the way out the guard is let go and waited for."""
    to_guard, guard_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    guard = _fork(lambda: pageguard.run(guard_end), keep=[guard_end])
    guard_end.close()
    server = _Server(sock, to_guard, image)
    try:
        server.run()
    except BaseException:
        server.abort()
        raise
    finally:
        to_guard.close()  # the guard exits (first killing any process not done)
        os.waitpid(guard, 0)


def _close_fds_but(keep: set[int], packs: Path | None) -> None:
    """In a forked child: close the restorer's fds (ptrace's mem files, pipes, the store's
    lock, a FUSE connection) except `keep`, stdio and the files under `packs`."""
    inside = f"{packs}/" if packs else None
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd in keep:
            continue
        with contextlib.suppress(OSError):  # the directory listing's own fd, already closed
            if inside is None or not os.readlink(f"/proc/self/fd/{fd}").startswith(inside):
                os.close(fd)


BLOCK = 64 * PAGE_SIZE  # the image's page blocks (image.py)


def _mask(block: int, start: int, end: int) -> int:
    """Bits of the pages of `block` inside [start, end)."""
    first = max(0, (start - block) // PAGE_SIZE)
    last = min(64, -(-(end - block) // PAGE_SIZE))
    return ((1 << last) - 1) & ~((1 << first) - 1) if last > first else 0


class _Space:
    """One address space being served: the pages it still has to receive.

    The image's page blocks are looked up when first needed (a fault, or the background
    push, which walks the blocks of the lazy ranges in order), so the server answers
    the first fault at once whatever the size of the image. A loaded block is
    [bits still to send, bits the image has, the image's block value]; `moved` holds
    single pages that mremap moved, or that were put back to send again."""

    def __init__(self, uffd: int, tree, pid: int, ranges: list[tuple[int, int]], host_pid: int | None = None,
                 mark: tuple[int, Path] | None = None):
        self.uffd, self.tree, self.pid, self.ranges = uffd, tree, pid, sorted(ranges)
        self._starts = [start for start, _ in self.ranges]
        self.host_pid, self.mark = host_pid, mark  # host pid: None for a space a fork made
        self.blocks: dict[int, list] = {}
        self.moved: dict[int, bytes] = {}
        self.dropped: list[tuple[int, int]] = []  # unmapped or emptied: never sent
        self._walk = self._blocks_in_ranges()
        self._current: int | None = None  # the block being pushed
        self.finished = False  # everything sent (or the process gone)
        self.number = 0  # the server's name for it (to the guard)

    def _key(self, block: int) -> bytes:
        return _PAGES + struct.pack(">QQ", self.pid, block)

    def _blocks_in_ranges(self):
        for start, end in self.ranges:
            for key, stored in self.tree.entries(self._key(start - start % BLOCK), self._key(end)):
                yield struct.unpack(">Q", key[-8:])[0], stored

    def _load(self, block: int, stored: Entry | None = None) -> list:
        """[pages still to send (bitmap), pages saved (bitmap), their chunk ids] of a block."""
        entry = self.blocks.get(block)
        if entry is None:
            if stored is None:
                stored = self.tree.get_entry(self._key(block)) or Entry(b"\0" * 8, ())
            bitmap = struct.unpack_from("<Q", stored.value)[0]
            wanted = 0
            for start, end in self.ranges:
                if start < block + BLOCK and block < end:
                    wanted |= _mask(block, start, end)
            for start, end in self.dropped:
                if start < block + BLOCK and block < end:
                    wanted &= ~_mask(block, start, end)
            entry = self.blocks[block] = [bitmap & wanted, bitmap, block_ids(*stored)]
        return entry

    def fork(self, uffd: int) -> "_Space":
        child = _Space(uffd, self.tree, self.pid, self.ranges)
        child.blocks = {b: list(e) for b, e in self.blocks.items()}
        child.moved, child.dropped, child.finished = dict(self.moved), list(self.dropped), self.finished
        return child

    def take(self, addr: int) -> bytes | None:
        """The chunk id of a page still to send (now counted as sent), or None."""
        cid = self.moved.pop(addr, None)
        if cid is not None or self.finished:
            return cid
        block = addr - addr % BLOCK
        if not any(start <= addr < end for start, end in self.ranges):
            return None
        entry = self._load(block)
        index = (addr - block) // PAGE_SIZE
        if not entry[0] >> index & 1:
            return None
        entry[0] &= ~(1 << index)
        rank = bin(entry[1] & ((1 << index) - 1)).count("1")
        return entry[2][rank]

    def put_back(self, addr: int, cid: bytes) -> None:
        self.moved[addr] = cid
        self.finished = False

    def drop(self, start: int, end: int) -> None:
        """The range was unmapped or emptied: nothing of it is sent any more."""
        self.dropped.append((start, end))
        for addr in [a for a in self.moved if start <= a < end]:
            del self.moved[addr]
        for block, entry in self.blocks.items():
            if entry[0] and block < end and start < block + BLOCK:
                entry[0] &= ~_mask(block, start, end)

    def clear(self) -> None:
        """The process is gone."""
        self.moved.clear()
        self.finished = True

    def move(self, old: int, new: int, length: int) -> None:
        """mremap moved [old, old + length) to new: its pending pages move along."""
        pending = [(a, self.take(a)) for a in range(old, old + length, PAGE_SIZE)
                   if any(start <= a < end for start, end in self.ranges)]
        self.drop(old, old + length)
        for addr, cid in pending:
            if cid is not None:
                self.put_back(addr - old + new, cid)

    def next_run(self) -> list[tuple[int, bytes]]:
        """Pending pages at consecutive addresses (at most one block's), taken out; [] when
        everything is sent (then `finished`)."""
        if self.moved:
            addr = next(iter(self.moved))
            return [(addr, self.take(addr))]
        while self._current is None or not self.blocks[self._current][0]:
            found = next(self._walk, None)
            if found is None:
                self.finished = True
                return []
            self._current = found[0]
            self._load(*found)
        block = self._current
        entry = self.blocks[block]  # as take() would page by page: bits still to send are a subset
        bits, ids = entry[0], entry[2]  # of the image's, so a row of them has consecutive ids
        first = (bits & -bits).bit_length() - 1
        row = bits >> first
        length = ((row ^ (row + 1)) >> 1).bit_length()  # the set bits in a row from `first` on
        start = block + first * PAGE_SIZE        # one UFFDIO_COPY fills one mapping: stop at its end
        at = bisect.bisect_right(self._starts, start) - 1
        end = self.ranges[at][1] if at >= 0 and start < self.ranges[at][1] else start + PAGE_SIZE
        length = min(length, (end - start) // PAGE_SIZE)
        entry[0] &= ~(((1 << length) - 1) << first)
        rank = bin(entry[1] & ((1 << first) - 1)).count("1")  # saved pages of the block before `first`
        return [(block + (first + i) * PAGE_SIZE, ids[rank + i]) for i in range(length)]


FAULT_GRACE_MS = 1  # after answering a fault, how long the server waits for the next before pushing


class _Server:
    """The page server's loop (in the forked child). Faults come first: a process that
    faulted will likely fault again within microseconds (a pass over its memory), so
    after answering one the server waits FAULT_GRACE_MS for the next before it pushes a
    run or indexes a pack (each some ms), which would otherwise stand before every fault."""

    def __init__(self, sock: socket.socket, guard: socket.socket, image: _OnFirstUse):
        self.sock, self.guard, self.image = sock, guard, image
        self.spaces: list[_Space] = []
        self.guarded_init = False  # the namespace init's pidfd is with the guard
        self.added = 0  # spaces numbered for the guard
        self.retry: list[tuple[_Space, int]] = []  # faults answered EAGAIN: again after the events
        self.open = True

    def run(self) -> None:
        faulting = False  # the last round answered a fault: the next one likely follows at once
        while self.open or not all(s.finished for s in self.spaces) or self.retry:
            waiting = [s.uffd for s in self.spaces] + ([self.sock.fileno()] if self.open else [])
            busy = not all(s.finished for s in self.spaces)
            poller = select.poll()  # not select(): a fork-heavy process can mean many uffds
            for fd in waiting:
                poller.register(fd, select.POLLIN)
            ready = [fd for fd, _ in poller.poll(1000 if not (busy or self.retry) else
                                                 FAULT_GRACE_MS if faulting else 0)]
            faulting = any(s.uffd in ready for s in self.spaces)
            if self.open and self.sock.fileno() in ready:
                self._receive()
            for space in [s for s in self.spaces if s.uffd in ready]:
                self._events(space)
            self._retry()
            if not ready and busy:
                self._push()
        for space in self.spaces:
            self._done(space)

    def abort(self) -> None:
        """The server failed: once it exits, missing pages would read as zeros, so the
        processes it serves are killed rather than left to run on wrong memory."""
        for space in self.spaces:
            if space.host_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(space.host_pid, signal.SIGKILL)

    def _receive(self) -> None:
        received = _receive_space(self.sock)
        if received is None:
            self.open = False
            return
        uffd, info = received
        space = _Space(uffd, self.image, info["pid"], [tuple(r) for r in info["ranges"]],
                       info["host_pid"], self._mark(info["host_pid"]))
        self._add(space, info["host_pid"])
        if info.get("init") and not self.guarded_init:
            self.guarded_init = True
            self._guard_pid(info["init"], pageguard.send_init)
        self.sock.send(b"ok")

    def _add(self, space: _Space, host_pid: int | None) -> None:
        """Serve `space`, and hand its userfaultfd (and its process) to the guard first."""
        space.number = self.added = self.added + 1
        self.spaces.append(space)
        if host_pid is None:
            pageguard.send_space(self.guard, space.number, space.uffd, None)
        else:
            mark = str(space.mark[1]) if space.mark else ""
            self._guard_pid(host_pid, lambda guard, pidfd: pageguard.send_space(guard, space.number, space.uffd,
                                                                                pidfd, mark))

    def _guard_pid(self, pid: int, send) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            send(self.guard, pidfd)
        finally:
            os.close(pidfd)

    def _mark(self, host_pid: int) -> tuple[int, Path] | None:
        """/run/slsfs/lazy/<pid>, locked while the process is served (see check_served)."""
        path = MARK_DIR / str(host_pid)
        try:
            MARK_DIR.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd, path

    def _done(self, space: _Space) -> None:
        """Every page is in (or the process is gone): let the kernel take the ranges back."""
        os.close(space.uffd)
        pageguard.send_done(self.guard, space.number)
        if space.mark is not None:
            fd, path = space.mark
            os.unlink(path)
            os.close(fd)
            space.mark = None

    def _events(self, space: _Space) -> None:
        while True:
            try:
                raw = os.read(space.uffd, MSG_SIZE * 16)
            except BlockingIOError:
                return
            for offset in range(0, len(raw), MSG_SIZE):
                self._event(space, raw[offset:offset + MSG_SIZE])

    def _event(self, space: _Space, msg: bytes) -> None:
        event = msg[0]
        if event == EVENT_PAGEFAULT:
            addr = struct.unpack_from("<Q", msg, 16)[0]
            self._serve(space, addr - addr % PAGE_SIZE)
        elif event == EVENT_FORK:
            self._add(space.fork(struct.unpack_from("<I", msg, 8)[0]), None)
        elif event == EVENT_REMAP:
            old, new, length = struct.unpack_from("<QQQ", msg, 8)
            space.move(old, new, length)
        elif event in (EVENT_REMOVE, EVENT_UNMAP):
            start, end = struct.unpack_from("<QQ", msg, 8)
            space.drop(start, end)

    def _serve(self, space: _Space, page: int) -> None:
        cid = space.take(page)
        try:
            if cid is None:
                zero = (ctypes.c_uint64 * 4)(page, PAGE_SIZE, 0, 0)
                _ioctl(space.uffd, UFFDIO_ZEROPAGE, zero, "UFFDIO_ZEROPAGE")
            else:
                self._copy(space, page, self.image.read_pages([cid]))
        except CheckpointError as exc:
            self._failed(space, page, [cid] if cid is not None else [], exc)

    def _copy(self, space: _Space, addr: int, datas: list[bytes]) -> int:
        """UFFDIO_COPY of consecutive pages; returns how many went in (a run can stop early)."""
        data = b"".join(datas)  # the ioctl reads it in place (it lives until we return)
        arg = (ctypes.c_uint64 * 5)(addr, ctypes.cast(data, ctypes.c_void_p).value, len(data), 0, 0)
        _ioctl(space.uffd, UFFDIO_COPY, arg, "UFFDIO_COPY")
        return arg[4] // PAGE_SIZE

    def _failed(self, space: _Space, addr: int, cids: list[bytes], exc: CheckpointError) -> None:
        err = getattr(exc, "errno", 0)
        if err == errno.EAGAIN:  # an event is waiting to be read first: put the pages back
            for i, cid in enumerate(cids):
                space.put_back(addr + i * PAGE_SIZE, cid)
            self.retry.append((space, addr))
        elif err == errno.EEXIST:  # already there: make sure nobody still sleeps on it
            wake = (ctypes.c_uint64 * 2)(addr, max(len(cids), 1) * PAGE_SIZE)
            raw_ioctl(space.uffd, UFFDIO_WAKE, wake)
            for i, cid in enumerate(cids[1:], 1):  # the rest of a run: one page at a time
                space.put_back(addr + i * PAGE_SIZE, cid)
        elif err == errno.ENOENT and len(cids) > 1:   # the run spans mappings (one split since, by
            for i, cid in enumerate(cids):            # mprotect, say): one page at a time
                space.put_back(addr + i * PAGE_SIZE, cid)
        elif err in (errno.ESRCH, errno.ENOENT):  # the process is gone, or the range went away
            if err == errno.ESRCH:
                space.clear()
        else:
            raise exc

    def _retry(self) -> None:
        retry, self.retry = self.retry, []
        for space, page in retry:
            self._serve(space, page)

    def _push(self) -> None:
        """Send one run of pages nobody asked for yet; or, before the first, build more of
        the store's index (the push reads most of its chunks: 2 GiB of pages, 740 ms of
        index building in one go, is ~10 ms a step, and faults are answered in between; a
        fault's few pages are found without it)."""
        if self.image.index_some():
            return
        space = next(s for s in self.spaces if not s.finished)
        run = space.next_run()
        if not run:
            self._done_if_last(space)
            return
        cids = [cid for _, cid in run]
        try:
            done = self._copy(space, run[0][0], self.image.read_pages(cids))
            for addr, cid in run[done:]:  # stopped early: the rest goes back
                space.put_back(addr, cid)
        except CheckpointError as exc:
            self._failed(space, run[0][0], cids, exc)
        if space.finished:
            self._done_if_last(space)

    def _done_if_last(self, space: _Space) -> None:
        """A space that has everything is let go at once (its process no longer waits on us)."""
        if not self.retry:
            self._done(space)
            self.spaces.remove(space)


def _send_space(sock: socket.socket, uffd: int, info: dict) -> None:
    """Hand a process's userfaultfd and what the server must know of it (`info`: its
    ranges, one per mapping, may run to megabytes) to the server: the JSON goes in a
    memfd passed with it, since one seqpacket message is bounded by the socket's buffer."""
    holder = os.memfd_create("sls-lazy-space", os.MFD_CLOEXEC)
    try:
        os.write(holder, json.dumps(info).encode())   # (a memfd takes a whole write)
        socket.send_fds(sock, [b"space"], [uffd, holder])
    finally:
        os.close(holder)


def _receive_space(sock: socket.socket) -> tuple[int, dict] | None:
    """What _send_space sent: (the userfaultfd, the info), or None once the restorer has
    closed its end."""
    message, fds, _, _ = socket.recv_fds(sock, 16, 2)
    if not message:
        return None
    uffd, holder = fds
    try:
        return uffd, json.loads(os.pread(holder, os.fstat(holder).st_size, 0))
    finally:
        os.close(holder)
