"""`FileSystem`: one store's volume served over FUSE, with checkpoints, snapshots and clones.

This is the in-process API (see `mount/__init__.py` for how a daemon embeds it). It
owns the views and the pyfuse3 Operations, seals buffered writes into the volume
trees, commits checkpoints (periodically when dirty, on fsync, on request), thins
old checkpoints by the store's retention policy, and implements the O(1) snapshot
and clone operations on paths inside the mount.

Everything runs in the trio thread that serves FUSE: the Store is not thread-safe,
and every handler here is synchronous between awaits, so no lock is needed.
Simplification: an fsync seals and commits in the event loop, then waits for one fsync
of the store (mount.sync_thread: in the loop itself while the disk answers within
FSYNC_BLOCK_S, else in a worker thread, the loop waiting for it directly that long).
FUSE requests wait meanwhile (one reader task), so the fsyncs of several processes are
made durable one after another; one whose file has nothing changed since the durable
commit that last took it in costs no commit and no disk fsync (its data rode on the
earlier one: mount.durable_points), whatever other files changed meanwhile.

The kernel's writeback cache (`writeback_cache=True`: on in the standalone daemon and in
slsfs's group daemon, off by default for other embedding daemons): writes land in
the kernel's page cache and reach the daemon in large batches, at close, at fsync, at
syncfs or when the kernel writes back on its own (up to 30 s later); the kernel owns
mtime, ctime and size of open files meanwhile and sends them with SETATTR. What this
changes for durability, and how it is bounded:
- fsync/fdatasync: the kernel writes the file's pages and times back before it sends
  FSYNC, which commits durably: unchanged.
- periodic checkpoints: while a file is (or was, since the last flush) open for writing,
  the mount is syncfs()ed every FLUSH_EVERY_S (100 ms) in a helper process
  (`flush_kernel_writes`, mount.flusher: a thread of the daemon asleep in that syncfs
  would keep a SIGKILLed daemon from ever exiting); what it brings in is dirty, so the
  next periodic checkpoint holds it. The flushes run beside the checkpoints (waiting
  for each one halved the checkpoints per second under load). A SIGKILL of the daemon
  loses at most what was written in the last FLUSH_EVERY_S + one syncfs + one interval
  before it (without the cache: one interval); a file's close, fsync or fdatasync sends
  its pages at once.
- the group checkpoint's syncfs + drain (slsfs) and `drain_kernel_cache` bring every
  dirty page in, as they did for shared mmaps before; but a daemon SIGKILLed while its
  own thread sits in such a syncfs can no longer exit (see mount.flusher): an embedding
  daemon that turns the cache on must syncfs from another process: `sync_kernel_cache`
  does it through the helper process from the trio thread (slsfs's group stop too: its
  seal runs in a task of the trio thread while the tracer captures the frozen group).
- ENOSPC and EIO from the daemon surface at fsync or close, not at write().
- a daemon that stops serving (cancels `serve`) must first `await fs.flush_kernel_writes()`
  or the kernel's dirty pages of still-open files are lost with the connection; the
  standalone daemon does so on SIGTERM/SIGINT, and a close() flushes a file's pages anyway.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import logging
import os
import stat
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Awaitable, Callable, Iterable

import pyfuse3
import trio
from pyfuse3 import FUSEError

from objectstore import Commit, StoreError, StoreFull
from objectstore.gc import SLICE_S, Collection, Removal
from objectstore.retention import Prune, retained

from . import device_number, extra_requests, fusectl, schema
from .control import canonical_mountpoint, slsfs_mounts, store_fsname, unescape_mountinfo
from .flusher import Flusher
from .heap import give_back_free_memory_periodically, keep_freed_buffers
from .history import SNAPSHOT_PREFIX, VOLUME_PREFIX, HistoryTree
from .init_flags import InitRelay
from .kernel_cache import forget_entry
from .options import ATIME_MOUNT_OPTIONS, DEFAULT_INTERVAL_MS, KERNEL_MOUNT_OPTIONS, atime_policy, last_wins
from .read_wakeup import interrupting_reads
from .single_reader import announce_turn, single_reader_session
from .sync_thread import SYNC_THREAD
from .treediff import TreeDiff, diff_steps
from .operations import HOLDER, META_NAME, Operations
from .views import META_VIEW, MetaView, ViewTable, kernel_ino, split_ino
from .volume import Volume

log = logging.getLogger("slsfs.mount")

SPACE_RESERVE = 16 * 1024 * 1024          # bytes kept free on the store's disk
FREE_SPACE_MARGIN = 256 * 1024 * 1024     # has_space: reuse a recent statvfs above this
FREE_SPACE_RECHECK_S = 0.25
RETENTION_EVERY_S = 5.0
BARRIER_EVERY_S = 1.0                     # periodic checkpoints become durable within ~1 s


DRAIN_TIMEOUT_S = 2.0
FLUSH_DRAIN_S = 0.02
SyncRequest = tuple[Flusher, int]         # a syncfs asked for from another thread: the helper asked, the number
FLUSH_EVERY_S = 0.1                       # writeback cache: syncfs this often while writers are open
FSYNC_BLOCK_S = 0.002                     # an application's fsync: how long the loop waits for the disk itself
# One pyfuse3 task reads and answers requests. Every handler runs to completion without
# awaiting anything another request could unblock, so more tasks add no concurrency,
# only trio scheduling per request (~20% of the CPU of a getattr); with one task, the
# reader lock pyfuse3 takes per request is dropped too (mount.single_reader).
SESSION_TASKS = 1
_DONE = object()                          # collect: the steps are over
REQUESTS_FIRST_POLL_S = 0.0005            # collect: how often it looks whether requests still wait
READAHEAD_KIB = 1024
CLONE_VOLUME_SEPARATOR = "."              # a clone's volume: `<volume of its mount>.<leaf>`
_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2                            # umount2 flag (linux/fs.h)


def syncfs_path(path: str) -> int:
    """syncfs(2) of the file system at `path`; returns its st_dev. For a worker thread:
    both the open and the syncfs let go of the GIL (pyfuse3.syncfs does not), so the
    trio thread can answer the write-back requests the syncfs waits for. The descriptor
    is closed at once: one held open would make a plain umount fail with EBUSY."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of {path}: {os.strerror(err)}")
        return os.fstat(fd).st_dev
    finally:
        os.close(fd)


def kernel_requests_waiting(mount_dev: int) -> int:
    """How many requests of the FUSE mount with device `mount_dev` the kernel has queued
    or handed to the daemon without an answer yet (mount.fusectl).

    syncfs can return once the kernel has *queued* the writes of dirty pages; a
    checkpoint must also wait for the daemon to have taken them in."""
    return fusectl.waiting(os.minor(mount_dev)) if os.major(mount_dev) == 0 else 0


def mount_device(mountpoint: str) -> str | None:
    """"major:minor" of the newest mount at `mountpoint`, from mountinfo: a stat of the
    mount point from the serving thread would wait for an answer only it can give."""
    target = canonical_mountpoint(mountpoint)
    device = None
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if unescape_mountinfo(fields[4]) == target:
                device = fields[2]             # the newest mount there is the last one
    return device


def abort_own_connection(mountpoint: str, device: str | None, store: str) -> bool:
    """End every request still open on the FUSE connection of our mount at `mountpoint`
    (device `device`, "major:minor"), for a daemon on its way out while still mounted: a
    request it read but never answered keeps the thread that made it waiting
    uninterruptibly until the connection ends, and if that thread is one of the daemon's
    own (a syncfs, a stat from the checkpointer), or a child still holds /dev/fuse, the
    connection never ends: the daemon could not exit (seen once: a group daemon stuck in
    exit with its tracer in a getattr of its own mount).

    Only while a mount of ours is attached (below): connections are named by the mount's
    minor device number, which the kernel gives to the next mount once ours is gone, and
    aborting by number after unmounting could end another file system's new mount (seen:
    a test's new mount at the same mount point got ENOTCONN right after the old daemon's
    unmount, under load; and before that, a PostgreSQL group's new mount ended within
    300 ms while other slsfs mounts were being unmounted). A session the kernel ended
    (an unmount) needs none: the kernel aborted the connection itself.

    The mount is then detached here (umount2 MNT_DETACH): libfuse's unmount leaves a
    mount whose connection was aborted as it is, attached and answering ENOTCONN; and so
    is every other mount of the file system in this mount namespace (a second mount:
    mount --bind, `sls mount` of a live store), which libfuse knows nothing of. Such a
    mount is ours if its device is `device` and its source our `store` (whose lock only
    we hold: a number freed and reused is another store's mount); the connection is
    aborted through one of them when the user has unmounted the one at `mountpoint`.
    True if the connection was ours (aborted and detached)."""
    if device is None:
        return False
    ours = [mountpoint, *(m.mountpoint for m in slsfs_mounts() if m.device == device and m.store == store)]
    if not any(fusectl.abort_mounted(path, device) for path in ours):
        return False
    for path in dict.fromkeys(ours):
        if fusectl.device_of(path) == device and _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            log.warning("could not detach %s after aborting its connection: %s", path, os.strerror(err))
    return True


def raise_readahead(mountpoint: str, kib: int = READAHEAD_KIB) -> None:
    """Let the kernel read ahead `kib` KiB on this mount (the default, 128 KiB, makes a
    cold sequential read cost one request per 128 KiB; 1 MiB cut the daemon's work for
    it and sped such reads up ~1.5x). Needs root; otherwise nothing changes.

    The mount's device number comes from mountinfo (mount_device)."""
    device = mount_device(mountpoint)
    if device is None:
        return
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "r+") as f:
            if int(f.read()) < kib:
                f.seek(0)
                f.write(str(kib))
    except (OSError, ValueError) as exc:
        log.info("read-ahead of %s left as it is: %s", mountpoint, exc)


class MountError(Exception):
    """A request on a mounted file system that cannot be done (message for the user)."""


FUSE_DEVICE = "/dev/fuse"


def check_fuse_device() -> None:
    """MountError, saying what to do, when this process cannot open /dev/fuse: libfuse
    then fails with "fuse_session_mount failed" alone (its reason goes to stderr), and it
    tries fusermount3 only after opening the device itself."""
    if os.access(FUSE_DEVICE, os.R_OK | os.W_OK):
        return
    if not os.path.exists(FUSE_DEVICE):
        raise MountError(f"there is no {FUSE_DEVICE}: load the fuse kernel module (`modprobe fuse`), or give "
                         "this container the device")
    mode = stat.S_IMODE(os.stat(FUSE_DEVICE).st_mode)
    raise MountError(f"{FUSE_DEVICE} is not readable and writable by uid {os.getuid()} (mode {mode:04o}): a user's "
                     f"FUSE mount needs it 0666, as udev makes it (`chmod 0666 {FUSE_DEVICE}` as root), or mount as root")


def clone_volume_roots(volume: str, roots: dict[str, bytes]) -> dict[str, bytes]:
    """The volumes that `FileSystem.clone` made in `volume`'s mount (clones of clones too:
    all are named `<volume>.<leaf>`), with their roots in `roots` (a commit's): a reset of
    `volume` to that commit's tree resets them too, or the directories grafted into it
    would show later files than the rest of the tree."""
    prefix = VOLUME_PREFIX + volume + CLONE_VOLUME_SEPARATOR
    return {name[len(VOLUME_PREFIX):]: root for name, root in roots.items() if name.startswith(prefix)}


def ensure_volume(store, name: str) -> None:
    """Create volume `name` holding an empty file system, unless it exists."""
    if name in store.volumes():
        return
    tree = store.create_volume(name)
    Volume.format(tree, os.getuid(), os.getgid())
    store.commit(f"create volume {name}")


class FileSystem:
    """The file system of volume `volume` of an open, writable `store`."""

    def __init__(self, store, volume: str = "main", *,
                 checkpoint_interval_ms: float | None = DEFAULT_INTERVAL_MS,
                 writeback_cache: bool = False, fsync_commits: bool = True,
                 also_keep: Callable[[set[int]], set[int]] | None = None) -> None:
        """`also_keep(kept ids)`: the commits that retention and GC must keep beside those,
        which only the layer above can see (slsfs: the files commits its group records name
        by id); see `kept_beyond_policy`.

        `fsync_commits=False`: an application's fsync or fdatasync returns once the
        kernel has sent the file's pages (it does so before FSYNC), without a commit or a
        disk flush. Only for a mount whose state after a crash is never newer than its
        owner's last checkpoint (slsfs's group daemon: a restore rolls the volume back to
        the group's checkpoint, fsync()ed writes included), where a durable commit per
        fsync is work that no restore uses: 3 of them per SQLite transaction cost the
        daemon ~90% of its CPU per row. The kernel is told so at the first FSYNC (ENOSYS:
        Operations._fsync) and asks no more."""
        self.store = store
        self.volume_name = volume
        self.also_keep = also_keep
        self.interval = None if checkpoint_interval_ms is None else checkpoint_interval_ms / 1000
        ensure_volume(store, volume)
        self.main = Volume(store, store.volume(volume), volume)
        self.history = HistoryTree(store, volume)
        self.views = ViewTable(store, self.main, MetaView(self.history.root))
        self.ops = Operations(store, self.views,
                              make_durable=self.make_durable if fsync_commits else None,
                              has_space=self.has_space, held_back=self.held_back,
                              writeback_cache=writeback_cache,
                              sync_kernel=functools.partial(self.sync_kernel_cache, leave=1))
        self.checkpoints_taken = 0
        self.committed: Commit | None = None    # the commit holding the file system, if known (mark_committed)
        self.kernel_flushes = 0                 # syncfs done by flush_kernel_writes
        self._last_retention = self._last_barrier = time.monotonic()
        self._durable_lock = trio.Lock()
        self._serving = False                 # between pyfuse3.init and pyfuse3.close
        self._flusher: Flusher | None = None    # the syncfs helper, while serving
        self._flusher_start = trio.Lock()       # sync_kernel_cache starts it without the cache
        self._helper_on_demand = False          # serve(syncfs_helper=False): started when first needed
        self._mountpoint = ""                   # while serving
        self._device: str | None = None          # the mount's "major:minor" while serving
        self._connection = 0                    # the FUSE connection's number (fusectl)
        self._free, self._free_checked = 0, float("-inf")   # has_space's last statvfs
        self.init_relay = InitRelay()           # replaced at each serve()
        self._collecting = trio.Lock()          # one garbage collection at a time (collect)
        self._compared: Counter[int] = Counter()   # checkpoints a running diff reads (kept)
        self._tasks: trio.Nursery | None = None  # while serving: where maybe_collect starts one
        self._reclaim_unheld_orphans(self.main)

    # ----- state ---------------------------------------------------------------------
    @property
    def device_minor(self) -> int:
        """The minor number of the mount's device (st_dev 0:N) while serving; else 0."""
        return self._connection

    @property
    def dirty(self) -> bool:
        return any(v.changed for v in self.views.live_volumes())

    def seal(self) -> None:
        """Move every buffered write and inode change into the volume trees, so that the
        next `store.commit()` holds exactly the file system's current state."""
        for volume in self.views.live_volumes():
            volume.seal()

    def mark_committed(self, commit: Commit | None = None) -> None:
        """Tell the file system that a commit (`commit`, if the caller says which) now
        holds everything sealed so far: while nothing changes, `committed` names it (set
        first: another thread that finds the file system clean finds that commit there)."""
        self.committed = commit
        holder = commit or self.store.head
        for volume in self.views.live_volumes():
            volume.changed = False
            if holder is not None:
                volume.durable_points.committed(holder.id, self.store.durable_id)
        self.checkpoints_taken += 1

    def syncfs_needed(self) -> bool:
        """Whether a syncfs of the mount could bring anything in: a handle that can write is
        open (a shared writable mapping holds one), or (writeback cache) a file was opened
        for writing since the last flush. Without either the kernel holds nothing: it writes
        a file's dirty pages back when its last writer closes or unmaps it. When it answers
        yes, the caller syncfs()es the mount at once: the writeback cache's mark is then
        reset to whether a writer is open, as `flush_kernel_writes` does. Callable from
        another thread (slsfs's group stop leaves the syncfs out when it answers no)."""
        if self.ops.kernel_may_hold_writes or self.ops.open_for_writing():
            if self.ops.enable_writeback_cache:    # a file opened for writing from here on sets it again
                self.ops.kernel_may_hold_writes = self.ops.open_for_writing()
            return True
        return False

    def checkpoint(self, label: str = "", *, durable: bool = False, roots: dict | None = None):
        """Seal and commit (setting extra named `roots` first); returns the Commit."""
        self.seal()
        for name, root in (roots or {}).items():
            self.store.set_root(name, root)
        commit = self.store.commit(label, durable=durable)
        self.mark_committed(commit)
        return commit

    @staticmethod
    async def drain_kernel_cache(mountpoint: str) -> None:
        """syncfs(2) the mount from a worker thread, so that dirty pages the kernel holds
        (shared writable mmaps) are written to this daemon before a checkpoint; then let
        the daemon answer every request the kernel still has queued for it."""
        dev = await trio.to_thread.run_sync(syncfs_path, str(mountpoint), abandon_on_cancel=True)
        deadline = trio.current_time() + DRAIN_TIMEOUT_S
        while kernel_requests_waiting(dev) and trio.current_time() < deadline:
            await trio.sleep(0.0005)   # the trio loop answers them meanwhile

    async def flush_kernel_writes(self) -> None:
        """Bring in what the kernel's writeback cache holds, if a file was open for writing
        since the last flush (`drain_kernel_cache` of this mount); a no-op otherwise or
        when not serving. Before each periodic checkpoint, and before serving stops."""
        if not (self.ops.kernel_may_hold_writes and (self._flusher or self._helper_on_demand)):
            return
        try:
            await self._start_helper()
            if self._flusher is None:             # (serving ended meanwhile)
                return
            # other processes' requests keep the count up on a busy mount: a short wait
            await self._sync_through_helper(FLUSH_DRAIN_S)
            self.kernel_flushes += 1
        except OSError as exc:
            log.warning("syncfs before a checkpoint failed: %s", exc)

    async def sync_kernel_cache(self, requested: SyncRequest | None = None, *, leave: int = 0) -> None:
        """Bring in every dirty page the kernel holds for this mount (the writeback
        cache's and shared mmaps'), then let this daemon answer the requests the kernel
        still has queued for it (at most DRAIN_TIMEOUT_S): what `drain_kernel_cache`
        does, but the syncfs runs in the helper process (mount.flusher), so no thread of
        this daemon ever sleeps in it and a SIGKILLed daemon can always exit (slsfs's
        group stop seals the file system with it, in a task of the trio thread).
        `requested`: the syncfs was asked for already (`request_kernel_sync`): its answer
        is awaited instead of asking again. `leave`: requests the drain leaves waiting (a
        request handler's own, lseek's: syncfs returns once the kernel has sent the pages,
        not once they are answered, so it is the drain that brings them in).

        Call it from the trio thread that serves (another thread:
        `trio.from_thread.run(fs.sync_kernel_cache, trio_token=token)`). Without the
        writeback cache the helper is started by the first call. Raises MountError when
        not serving, OSError when the helper's syncfs failed."""
        if requested is not None:
            await self._sync_through_helper(DRAIN_TIMEOUT_S, requested)
            return
        await self._start_helper()
        if not self._serving:
            raise MountError("the file system is not being served: nothing to sync")
        await self._sync_through_helper(DRAIN_TIMEOUT_S, leave=leave)

    async def _start_helper(self) -> None:
        """Start the syncfs helper (opening the mount for each syncfs) if none runs and
        this serves."""
        if self._flusher is None:                 # (inside a group's stop: no scheduler pass for the lock)
            async with self._flusher_start:
                if self._serving and self._flusher is None:
                    flusher = await Flusher.start(self._mountpoint, device=self._device)
                    if self._serving:
                        self._flusher = flusher
                    else:                         # serve() ended meanwhile
                        await flusher.close()

    async def flush_through(self, held_fd: int) -> None:
        """From here on the syncfs helper syncfs()es the mount through `held_fd`, a
        descriptor of its root that the caller keeps open while this serves (a group
        daemon: it holds one for its life anyway), instead of opening the mount for each
        syncfs: that open and close were an OPENDIR and a RELEASEDIR to answer inside every
        group stop. Returns once the new helper has started (the one before serves until
        then); a no-op when it runs already or when not serving."""
        if self._flusher is not None and self._flusher.held_fd == held_fd:
            return                                # (each group checkpoint asks: no scheduler pass)
        # The helper gets a copy made now: the caller may close `held_fd` while this waits
        # (a group daemon's restore in place does, ending this mount), and a closed or
        # reused number must not reach the helper's start.
        own = os.dup(held_fd)
        try:
            async with self._flusher_start:
                if not self._serving or (self._flusher is not None and self._flusher.held_fd == held_fd):
                    return
                flusher = await Flusher.start(self._mountpoint, own)
                flusher.held_fd = held_fd         # (what the caller knows it by)
                try:
                    await flusher.ready()
                except BaseException:
                    await flusher.close()
                    raise
                if not self._serving:             # serve() ended meanwhile
                    await flusher.close()
                    return
                old, self._flusher = self._flusher, flusher
                if old is not None:
                    await old.close()
        finally:
            os.close(own)                         # (the helper holds its own)

    def request_kernel_sync(self) -> SyncRequest | None:
        """Ask the syncfs helper for a syncfs now, from any thread, without waiting for it:
        the request (the helper asked and its number: the helper may be replaced meanwhile,
        `flush_through`) for `sync_kernel_cache` or `kernel_sync_done`; None when it
        cannot be asked so (no helper yet, not serving: `sync_kernel_cache` then asks).
        slsfs's group stop asks at the freeze, from its tracer thread: the syncfs runs in
        the helper, on another CPU, while the processes are captured. The caller has
        settled the writeback cache's mark already (`syncfs_needed`)."""
        flusher = self._flusher
        if flusher is None or not self._serving:
            return None
        try:
            return flusher, flusher.request()
        except OSError:
            return None

    def kernel_sync_done(self, requested: SyncRequest) -> bool:
        """In the trio thread: whether the syncfs asked for as `requested` is answered and
        the kernel has no request of this mount left unanswered (what `sync_kernel_cache`
        waits for), found without waiting; True once only. Raises OSError when that
        syncfs failed."""
        flusher, number = requested
        if not flusher.answered(number) or fusectl.waiting(self._connection):
            return False
        try:
            flusher.take(number)
        except OSError:
            self.ops.kernel_may_hold_writes = self.ops.enable_writeback_cache
            raise
        return True

    async def _sync_through_helper(self, drain_s: float, requested: SyncRequest | None = None, *,
                                   leave: int = 0) -> None:
        """syncfs in the helper (the answer to `requested` if it was asked for already),
        then answer queued requests for at most `drain_s`, until `leave` are left."""
        writeback = self.ops.enable_writeback_cache
        if writeback and requested is None:      # a file opened for writing from here on sets it again
            self.ops.kernel_may_hold_writes = self.ops.open_for_writing()
        try:
            await (self._flusher.syncfs() if requested is None else requested[0].answer(requested[1]))
        except OSError:
            self.ops.kernel_may_hold_writes = writeback
            raise
        deadline = trio.current_time() + drain_s
        while fusectl.waiting(self._connection) > leave and trio.current_time() < deadline:
            await trio.sleep(0.0005)

    async def make_durable(self, volume: Volume | None = None, ino: int | None = None) -> None:
        """fsync semantics: everything written so far is on disk when this returns; with
        `volume` and `ino` (an application's fsync of that inode): everything written to
        that file (for a directory: its entries) so far.

        Neither path awaits anything it does not have to: a file whose every change is
        in a durable commit already returns at once, whatever else changed since
        (mount.durable_points: another writer's fsync, or a periodic checkpoint made
        durable since, took it in), and so does anything when nothing at all is new
        since the last durable commit (SQLite's fsync of its directory, fsyncs of
        several files in a row); the lock is taken without a scheduler pass when
        no other make_durable holds it (`async with` a trio.Lock always makes one, with
        an epoll_wait: ~45 us more per fsync than acquire_nowait, measured in a loop
        with three sleeping tasks; SQLite makes four fsyncs per transaction)."""
        head = self.store.head
        if head is not None and volume is not None and volume.durable(ino, self.store.durable_id):
            return
        if not self.dirty and head is not None and self.store.durable_id >= head.id:
            return
        try:
            self._durable_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._durable_lock.acquire()
        try:
            if self.dirty or self.store.head is None:
                self.checkpoint("fsync")
            if self.store.durable_id < self.store.head.id:
                await self.barrier(block_s=FSYNC_BLOCK_S)
        except StoreFull:
            raise FUSEError(errno.ENOSPC) from None
        except StoreError as exc:
            log.error("fsync failed: %s", exc)
            raise FUSEError(errno.EIO) from None
        finally:
            self._durable_lock.release()

    async def barrier(self, *, block_s: float = 0.0) -> int:
        """Store.barrier() whose fsync runs in a worker thread (mount.sync_thread): other
        tasks run meanwhile, except for the first `block_s` seconds, during which the
        event loop waits for it directly; while the disk answers within `block_s` the
        fsync runs in the event loop itself (cheaper: an application's fsync uses
        FSYNC_BLOCK_S). The newest durable id."""
        pending = self.store.begin_barrier()
        await SYNC_THREAD.run(pending.wait, block_s)
        durable = self.store.end_barrier(pending)
        for volume in self.views.live_volumes():
            volume.durable_points.forget_through(durable)
        return durable

    def held_back(self) -> int:
        """The bytes of the disk's free space that writes cannot have: SPACE_RESERVE and
        what the buffers will take once stored. statfs leaves them out, so that what `df`
        shows as available can be written (and fallocated) whole."""
        return sum(v.buffered_bytes for v in self.views.live_volumes()) + SPACE_RESERVE

    def has_space(self, nbytes: int) -> bool:
        """Whether `nbytes` more can be buffered and still leave SPACE_RESERVE free once
        every buffer is stored. The disk's free space is asked again when the last
        answer is older than FREE_SPACE_RECHECK_S or within FREE_SPACE_MARGIN of the
        need: a statvfs per WRITE request was ~10% of the daemon's work for a small one."""
        need = nbytes + self.held_back()
        now = time.monotonic()
        if now - self._free_checked > FREE_SPACE_RECHECK_S or self._free < need + FREE_SPACE_MARGIN:
            disk = os.statvfs(self.store.path)
            self._free, self._free_checked = disk.f_bavail * disk.f_frsize, now
        return self._free >= need

    def browsed_checkpoints(self) -> set[int]:
        """Checkpoints the kernel still holds an inode of: of their `fs/` tree, or of
        what is under their `.sls/checkpoints/<id>/` (`info.json`, `procs/`), or that
        directory open: a reader is walking it, has a file or directory of it open, its
        cwd there has been listed, or its dentries are cached. Retention keeps them: with
        checkpoints 100 times a second the newest 100 span one second, and a copy of
        `.sls/latest/fs` used to lose its remaining paths half way (ENOENT). The kernel
        lets go when it evicts those inodes (memory pressure, the unmount), and the next
        retention thins them. A `<id>/` directory merely looked up does not count: listing
        `.sls/checkpoints/` looks every one up (READDIRPLUS), and would keep them all.
        Also the two checkpoints a running `diff` reads."""
        open_inodes = [split_ino(kino) for kino in self.ops.opens]
        opened = [(handle.view, handle.ino) for handle in self.ops.handles.values()]
        browsed = self.views.commits_of({*self.ops.held_per_view, *(view for view, _ in open_inodes + opened)})
        meta = self.views[META_VIEW]
        held_meta = {*self.ops.held_meta, *(local for view, local in open_inodes if view == META_VIEW)}
        browsed.update(meta.checkpoint_of(local, depth=3) for local in held_meta)
        browsed.update(meta.checkpoint_of(local) for view, local in opened if view == META_VIEW)
        browsed.discard(None)
        return browsed | set(self._compared)

    def kept_beyond_policy(self, kept: set[int]) -> set[int]:
        """What retention and GC keep beside the commits `kept`: the checkpoints being
        browsed, and what `also_keep` names for those."""
        extra = self.browsed_checkpoints()
        if self.also_keep is not None:
            extra |= self.also_keep(kept | extra)
        return extra

    async def collect(self, prune: Prune | None = None, *,
                      also_keep: Callable[[set[int]], set[int]] | None = None,
                      start_lock: trio.Lock | None = None,
                      before_delete: Callable[[], Awaitable[None]] | None = None,
                      spare_young: bool = False) -> dict:
        """A garbage collection (objectstore.gc.Collection) run in the trio thread in short
        steps, requests and checkpoints going on between them; its compaction's reads and
        lz4, and its syncs, run in a worker thread. Figures for the user. One at a time: a second call waits for the first.

        Kept: what `also_keep` names (default: `kept_beyond_policy`). With an explicit
        `prune`, the current state is committed first, so that what was deleted since the
        last checkpoint is not held by the newest one, which always stays. `start_lock` is held for the start (a checkpoint taker's
        lock: the start must not fall inside a checkpoint); `before_delete` is awaited
        before each pack is deleted (once its kept chunks are durable elsewhere);
        `spare_young`: see objectstore.gc.Collection._spared."""
        async with self._collecting:
            collection = Collection(self.store, prune=prune, spare_young=spare_young,
                                    also_keep=also_keep or self.kept_beyond_policy)
            with contextlib.closing(collection.steps()) as steps:
                async with start_lock or contextlib.nullcontext():
                    if prune is None:
                        self.seal()
                    else:
                        self.checkpoint("gc", durable=True)
                    step = next(steps, _DONE)      # the start, and a first slice of marking
                while step is not _DONE:
                    if step is None:
                        await self._requests_first()
                    else:            # a compaction's reads and lz4, or a pack's removal (after its sync)
                        if before_delete is not None and isinstance(step, Removal):
                            await before_delete()
                        await trio.to_thread.run_sync(step.run)
                    step = next(steps, _DONE)
            return collection.result

    async def diff(self, older: str | int, newer: str | int,
                   resolve: Callable[[str | int], tuple[int, dict]] | None = None) -> dict:
        """The paths added, removed and changed in this mount's volume between two
        checkpoints (ids, names, 'latest~N' or times; mount.treediff), worked out in the
        trio thread in slices with requests going on between them. Retention keeps both
        checkpoints until it is done. `resolve(spec)` -> (checkpoint id, its roots) reads
        the specs (default: the store's own checkpoints, `checkpoint_roots`)."""
        resolve = resolve or self.checkpoint_roots
        (old_id, old_roots), (new_id, new_roots) = resolve(older), resolve(newer)
        result = TreeDiff()
        pins = (old_id, new_id)
        self._compared.update(pins)
        try:
            for _ in diff_steps(self.store, old_roots, new_roots, self.volume_name, result):
                await self._requests_first()
        finally:
            self._compared.subtract(pins)
            self._compared = +self._compared     # drop the counts back at zero
        return {"a": old_id, "b": new_id, **result.to_json()}

    def checkpoint_roots(self, spec: str | int) -> tuple[int, dict]:
        """(id, roots) of the checkpoint `spec` names (Store.resolve)."""
        commit = self.store.resolve(spec)
        return commit.id, commit.roots

    async def _requests_first(self) -> None:
        """Between two steps of a collection: let every other task run, then wait while
        the kernel holds requests of this mount not answered yet, for as long as a step
        takes at most (the collection gets half of the thread while requests keep coming)."""
        await trio.sleep(0)
        deadline = trio.current_time() + SLICE_S
        while self._connection and fusectl.waiting(self._connection) and trio.current_time() < deadline:
            await trio.sleep(REQUESTS_FIRST_POLL_S)

    def apply_retention(self) -> int:
        """Thin old checkpoints by the store's policy (named ones stay, and what
        `kept_beyond_policy` adds); how many were forgotten.

        The record of what was forgotten is not synced here: the next barrier (at most
        BARRIER_EVERY_S later while checkpoints are taken, else the unmount's) makes it
        durable, and a crash before that only brings the forgotten commits back, to be
        thinned again (a GC syncs its own record before it deletes anything). Its fsync
        in the checkpoint loop took 1-30 ms every RETENTION_EVERY_S: missed checkpoints."""
        log_ = self.store.log()
        policy = self.store.retention_now
        if len(log_) <= policy.keep_last:
            return 0
        keep = retained(((c.id, c.time) for c in log_), self.store.tags().values(), policy, time.time())
        keep |= self.kept_beyond_policy(keep) & {c.id for c in log_}
        if len(keep) >= len(log_):
            return 0
        self.store.forget(keep, sync=False)
        return len(log_) - len(self.store.log())

    def maybe_collect(self) -> None:
        """Give the space back once the packs have doubled since the last collection
        (Store.gc_due): a collection in the background, unless one runs."""
        if self._tasks is not None and not self._collecting.locked() and self.store.gc_due():
            self._tasks.start_soon(self._collect_in_background)

    async def _collect_in_background(self) -> None:
        try:
            result = await self.collect()
        except StoreError as exc:
            log.warning("gc failed, will retry: %s", exc)
            return
        log.info("gc: freed %d bytes in %.1f s (%.2f s of it in this thread)", result["bytes_freed"],
                 result["seconds"], result["busy_seconds"])

    async def run_kernel_flushes(self) -> None:
        """flush_kernel_writes every FLUSH_EVERY_S, until cancelled."""
        while True:
            await trio.sleep(FLUSH_EVERY_S)
            await self.flush_kernel_writes()

    async def run_checkpoints(self) -> None:
        """Checkpoint every interval while something changed, and make those checkpoints
        durable about once a second (group commit), until cancelled.

        Checkpoints are due on a fixed grid of `interval` (not `interval` after the
        previous one ended), so a busy file system gets 1/interval checkpoints per
        second when each takes less than the interval; after falling behind by more
        than one interval the grid restarts from now instead of bursting to catch up."""
        due = trio.current_time()
        while True:
            due += self.interval
            now = trio.current_time()
            if due < now - self.interval:
                due = now
            announce_turn(due)
            await trio.sleep_until(due)
            if self.dirty:
                try:
                    self.checkpoint()
                except StoreError as exc:        # e.g. a full disk: keep the buffers, retry later
                    log.warning("checkpoint failed, will retry: %s", exc)
                    await trio.sleep(1)
            if (self.store.head is not None and self.store.durable_id < self.store.head.id
                    and time.monotonic() - self._last_barrier > BARRIER_EVERY_S):
                self._last_barrier = time.monotonic()
                try:
                    await self.barrier()
                except StoreError as exc:
                    log.warning("making checkpoints durable failed, will retry: %s", exc)
            if time.monotonic() - self._last_retention > RETENTION_EVERY_S:
                self._last_retention = time.monotonic()
                try:
                    self.apply_retention()
                except StoreError as exc:
                    log.warning("retention failed: %s", exc)
                self.maybe_collect()

    # ----- orphans -------------------------------------------------------------------
    def _reclaim_unheld_orphans(self, volume: Volume) -> None:
        held = self.store.holders(volume.name)
        for ino in volume.orphans():
            if ino not in held:
                volume.purge(ino)
            else:
                log.info("inode %d of %s is unlinked but held by %s: kept",
                         ino, volume.name, ", ".join(sorted(held[ino])))

    def release_own_holds(self) -> None:
        """At a clean stop: nothing of ours is open any more; free orphans only we held."""
        for volume in self.views.live_volumes():
            for ino, holders in self.store.holders(volume.name).items():
                if HOLDER in holders:
                    if self.store.release(volume.name, ino, HOLDER):
                        volume.purge(ino)
        self.ops.held.clear()

    # ----- paths inside the mount ----------------------------------------------------
    def resolve_path(self, relpath: str) -> int:
        """The kernel inode of a path relative to the mount root (symlinks not followed)."""
        kino = pyfuse3.ROOT_INODE
        for part in [p for p in relpath.split("/") if p not in ("", ".")]:
            if part == "..":
                raise MountError(f"{relpath}: '..' is not supported in mount paths")
            name = os.fsencode(part)
            if kino == pyfuse3.ROOT_INODE and name == META_NAME:
                kino = kernel_ino(META_VIEW, 1)
                continue
            index, local = split_ino(kino)
            try:
                kino = self.ops._resolve(self.views[index], local, name)
            except FUSEError as exc:
                raise MountError(f"{relpath}: {os.strerror(exc.errno)}") from None
        return kino

    def _directory_view(self, relpath: str) -> tuple[Volume, int]:
        index, local = split_ino(self.resolve_path(relpath))
        view = self.views[index]
        if not isinstance(view, Volume) or not stat.S_ISDIR(view.inode(local).mode):
            raise MountError(f"{relpath or '/'}: not a directory of a volume "
                             "(a live directory, a snapshot or a checkpoint's fs/ path)")
        return view, local

    def _subtree_root(self, view: Volume, ino: int, note: dict) -> bytes:
        """The root of a volume-format tree whose root directory is `ino`: O(1) COW copy."""
        if not view.readonly:
            self.seal()
        tree = view.tree.copy()
        tree.put(schema.SUPER_KEY, schema.Superblock(ino, view.sb.next_ino).encode())
        tree.put(b"N", _json(note))
        return tree.flush()

    def snapshot(self, relpath: str, name: str | None = None) -> dict:
        """Retain directory `relpath` as `.sls/snapshots/<name>/`: O(1)."""
        name = name or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if not name or "/" in name or name.startswith(".") or not name.isprintable() or \
                len(os.fsencode(name)) > schema.NAME_MAX:
            raise MountError(f"bad snapshot name {name!r}: it names .sls/snapshots/<name>/, so no '/', "
                             f"not starting with '.', no control character, at most {schema.NAME_MAX} bytes")
        if SNAPSHOT_PREFIX + name in self.store.roots():
            raise MountError(f"snapshot {name!r} already exists; pick another --name")
        view, ino = self._directory_view(relpath)
        started = time.perf_counter()
        root = self._subtree_root(view, ino, {"snapshot": name, "source": relpath, "time": time.time()})
        self.store.set_root(SNAPSHOT_PREFIX + name, root)
        commit = self.checkpoint(f"snapshot {name}", durable=True)
        return {"name": name, "checkpoint": commit.id, "path": f".sls/snapshots/{name}",
                "ms": (time.perf_counter() - started) * 1000}

    def clone(self, src: str, dest: str) -> dict:
        """A writable, independent copy of directory `src` at new path `dest`: O(1)."""
        view, ino = self._directory_view(src)
        parent_path, _, leaf = dest.rstrip("/").rpartition("/")
        parent_index, parent_local = split_ino(self.resolve_path(parent_path))
        parent = self.views[parent_index]
        if not isinstance(parent, Volume) or parent.readonly:
            raise MountError(f"{dest}: the new clone must be in a live directory")
        if not leaf or parent.lookup(parent_local, os.fsencode(leaf)) is not None:
            raise MountError(f"{dest}: already exists" if leaf else f"{dest}: needs a name")
        started = time.perf_counter()
        volume = self._free_volume_name(leaf)
        root = self._subtree_root(view, ino, {"clone_of": src, "time": time.time()})
        self.store.create_volume(volume, root)
        try:
            parent.graft(parent_local, os.fsencode(leaf), volume, ino)
        except FUSEError as exc:
            self.store.drop_volume(volume)
            raise MountError(f"{dest}: {os.strerror(exc.errno)}") from None
        if self._serving:
            forget_entry(kernel_ino(parent_index, parent_local), os.fsencode(leaf))
        commit = self.checkpoint(f"clone {src} -> {dest}", durable=True)
        return {"volume": volume, "checkpoint": commit.id, "ms": (time.perf_counter() - started) * 1000}

    def _free_volume_name(self, leaf: str) -> str:
        existing = set(self.store.volumes())
        base = f"{self.volume_name}{CLONE_VOLUME_SEPARATOR}{leaf}"[:200].replace("/", "_")
        n = 1
        name = base
        while name in existing:
            n += 1
            name = f"{base}.{n}"
        return name

    # ----- serving ------------------------------------------------------------------
    async def serve(self, mountpoint: str, *, allow_other: bool = False,
                    task_status=trio.TASK_STATUS_IGNORED, mount_options: Iterable[str] = (),
                    device_minor: int | None = None, syncfs_helper: bool = True,
                    build_index: bool = True) -> None:
        """Mount at `mountpoint` and serve until unmounted (or cancelled: then unmount).

        `mount_options` are generic kernel mount options (KERNEL_MOUNT_OPTIONS: ro,
        noexec, suid, ...) and atime options (ATIME_MOUNT_OPTIONS: relatime, strictatime,
        ...: mount.options.atime_policy, applied by the daemon, not the kernel). pyfuse3
        allows one mount per process. Tunes the process's malloc for request buffers
        (mount.heap).
        `device_minor`: the mount is made on device 0:`device_minor` if it is free (the
        number of the stale mount a restore replaces: mount.device_number).
        `syncfs_helper` False: with the writeback cache, the syncfs helper (an interpreter's
        start: ~20-30 ms of CPU, more under load) is not started with the mount but by the
        first flush or sync, or by `flush_through` (a group daemon, which holds the mount's
        root and starts the helper on it after a restore: one start, not two, and not
        while the restore runs).
        `build_index` False: the store's chunk index is not built in the background from
        the start (build_store_index: a group daemon's restore runs first).
        `task_status.started()` is called once the mount is live."""
        mount_options = last_wins(mount_options)          # (libfuse gets them as a set: no order)
        unknown = set(mount_options) - KERNEL_MOUNT_OPTIONS - ATIME_MOUNT_OPTIONS
        if unknown:
            raise MountError(f"unsupported mount option(s) {', '.join(sorted(unknown))}; supported: "
                             f"{', '.join(sorted(KERNEL_MOUNT_OPTIONS | ATIME_MOUNT_OPTIONS))}")
        check_fuse_device()
        self.ops.atime_policy = atime_policy(mount_options)
        options = set(pyfuse3.default_options) | (set(mount_options) & KERNEL_MOUNT_OPTIONS)
        options |= {f"fsname={store_fsname(os.fspath(self.store.path))}", "subtype=slsfs"}
        if allow_other:
            options.add("allow_other")
        self.ops.initialized = trio.Event()
        self.init_relay = InitRelay()           # asks for FUSE_HANDLE_KILLPRIV_V2 (mount.init_flags)
        keep_freed_buffers()
        with device_number.taking(device_minor):
            pyfuse3.init(self.ops, mountpoint, options)
        extra_requests.install(fallocate=self.ops.fallocate, lseek=self.ops.lseek,
                               copy_file_range=self.ops.copy_file_range, spawn=self._spawn)
        device = mount_device(mountpoint)
        unmount = True
        self._serving = True
        self._mountpoint = mountpoint
        self._device = device
        self._connection = int(device.split(":")[1]) if device else 0
        try:
            if self.ops.enable_writeback_cache and syncfs_helper:
                self._flusher = await Flusher.start(mountpoint, device=device)
            self._helper_on_demand = self.ops.enable_writeback_cache and not syncfs_helper
            async with trio.open_nursery() as nursery:
                self._tasks = nursery
                if self.interval is not None:
                    nursery.start_soon(self.run_checkpoints)
                    if self.ops.enable_writeback_cache:
                        nursery.start_soon(self.run_kernel_flushes)
                nursery.start_soon(self._raise_readahead_after_init, mountpoint)
                nursery.start_soon(give_back_free_memory_periodically)
                if build_index:
                    nursery.start_soon(self.build_store_index)
                task_status.started()
                with interrupting_reads(), single_reader_session(self.init_relay):   # SESSION_TASKS == 1
                    await pyfuse3.main(max_tasks=SESSION_TASKS)
                unmount = False                 # the kernel ended the session (umount)
                nursery.cancel_scope.cancel()
        finally:
            self._serving = False
            self._helper_on_demand = False
            self._tasks = None
            if self._flusher is not None:
                flusher, self._flusher = self._flusher, None
                await flusher.close()
            if unmount and abort_own_connection(mountpoint, device, str(self.store.path)):
                unmount = False                 # (detached already)
            pyfuse3.close(unmount=unmount)

    async def build_store_index(self) -> None:
        """Build the store's chunk index a step at a time (~10 ms each), serving between
        them: a few chunks are read and put without it (objectstore.packstore's notes),
        and what needs it whole (a checkpoint's pages, a collection, an eager restore)
        would otherwise build it in one go when it comes (65,000 chunks of a 16 MiB Redis
        group's store: 40-70 ms; `sls mount` then `sls restore GROUP` waited for it)."""
        while self.store.index_some():
            await trio.sleep(0)

    def _spawn(self, async_fn, *args) -> None:
        """Run a request handler's coroutine in the serving nursery (mount.extra_requests:
        requests come only while pyfuse3.main runs, inside it)."""
        self._tasks.start_soon(async_fn, *args)

    async def _raise_readahead_after_init(self, mountpoint: str) -> None:
        await self.ops.initialized.wait()      # INIT sets the read-ahead: change it after
        raise_readahead(mountpoint)

    def close(self, durable: bool = True) -> None:
        """After serving: final checkpoint, durable unless `durable` is False (the caller
        commits durably right after: one fsync for both), free what only this mount held."""
        self.ops.opens.clear()
        self.release_own_holds()
        if self.dirty:
            self.checkpoint("unmount", durable=durable)
        elif durable:
            self.store.barrier()

    def status(self) -> dict:
        head = self.store.head
        return {"volume": self.volume_name, "pid": os.getpid(), "store": str(self.store.path),
                "checkpoint_interval_ms": round(self.interval * 1000, 6) if self.interval else 0,   # 0: never
                "checkpoints_taken": self.checkpoints_taken, "kernel_flushes": self.kernel_flushes,
                "head": head.id if head else None,
                "durable": self.store.durable_id, "dirty": self.dirty,
                "kill_priv_v2": self.init_relay.granted,
                "volumes": self.store.volumes(), "open_inodes": len(self.ops.opens)}


def _json(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()
