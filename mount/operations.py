"""The pyfuse3 request handlers: a thin layer over views (`mount.views`) and volumes.

Each handler splits the kernel inode number into (view, local inode), calls the view,
and turns the result into pyfuse3 types. What lives here and nowhere else: the kernel's
lookup counts and open handles, the reclaim of unlinked inodes once nothing uses them
(holding them in the store's open-refcount table while they are open), O_APPEND,
EXDEV across views, EROFS in read-only views, ENOSPC before buffering data the disk
cannot take, the hidden `.sls` entry at the root, and what writes and truncations drop
(set-ID bits, file capabilities: Volume.drop_privileges), which the kernel leaves to
the daemon once it has FUSE_HANDLE_KILLPRIV_V2 (mount.init_flags). pyfuse3 does not pass
the kernel's "drop them" flag, so the writer's CAP_FSETID is taken to be uid 0: the
uid of the handle's opener for a write (in writeback mode the kernel sends only
unprivileged writers' writes to a set-ID file at once), the caller's for a truncation.

What the kernel may cache: attributes and entries (10 min live, 60 s in frozen trees),
negative entries (missing names) likewise, file pages across opens (keep_cache), and
with the writeback cache (`writeback_cache=True`, see mount.filesystem) written pages
and the size and times of regular files, which it sends back with WRITE and SETATTR.
In that mode the kernel places O_APPEND writes itself (every write goes through it, so
its size is right) and may read pages through a write-only handle (partial pages):
neither is checked here. `kernel_may_hold_writes` tells the file system that a
syncfs is needed before a checkpoint. FLUSH is answered ENOSYS once, so the kernel
stops sending it (it still writes a file's dirty pages back at close).

Permissions are checked by the kernel (`default_permissions`); this layer only applies
the caller's uid/gid to new inodes.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from typing import Awaitable, Callable

import pyfuse3
import trio
from pyfuse3 import EntryAttributes, FUSEError

from objectstore import StoreError

from .history import Graft, VFile, VLink
from .kernel_cache import drop_cached_pages, forget_attributes
from .schema import BLOCK_SIZE, FIRST_COOKIE, NAME_MAX, Entry
from .views import MAIN_VIEW, META_VIEW, MetaView, ViewTable, kernel_ino, split_ino
from .volume import Volume

log = logging.getLogger("slsfs.mount")

META_NAME = b".sls"
# renameat2's flag (linux/fs.h) that leaves an overlayfs whiteout, a character device 0/0,
# at the old name; the kernel checks CAP_MKNOD and refuses it with RENAME_EXCHANGE.
# pyfuse3 names only RENAME_NOREPLACE and RENAME_EXCHANGE.
RENAME_WHITEOUT = 4
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 1, 2, 0x10   # linux/falloc.h
TIME_NS_MIN, TIME_NS_MAX = -(1 << 63), (1 << 63) - 1    # an inode record's times (schema._INODE)
FUSE_UNKNOWN_INO = 0xFFFFFFFF   # libfuse's inode number for "not known" (readdir of "..")
HOLDER = "slsfs-mount"          # holder name in the store's open-refcount table
# Every change of a live tree goes through this mount, so the kernel's cache stays right
# (the one change it does not make itself, a clone grafted by `sls clone`, invalidates
# what it changed: kernel_cache.forget_entry); a long timeout lets a stat or a path walk
# of an unchanged file be answered by the kernel alone (an application started again
# minutes later walks the same paths). Bounded only to limit what a missed case costs.
LIVE_TIMEOUT = 600.0
FROZEN_TIMEOUT = 60.0           # checkpoint and snapshot trees never change
SEAL_BUFFERED_BYTES = 256 * 1024 * 1024
COPY_WRITTEN_MAX = 16 * 1024 * 1024     # a copy_file_range request's bytes read and written (not shared)


@dataclass
class Handle:
    view: int
    ino: int
    flags: int
    content: bytes | None = None     # a `.sls` file's bytes, fixed at open
    uid: int = 0                     # who opened it: what its writes drop (Volume.drop_privileges)
    gid: int = 0

    @property
    def direct(self) -> bool:
        """Opened with O_DIRECT: its reads and writes bypass the kernel's page cache."""
        return bool(self.flags & os.O_DIRECT)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True        # export support: open_by_handle_at, NFS (_dot_lookup)
    enable_writeback_cache = False

    def __init__(self, store, views: ViewTable, *, make_durable: Callable[[Volume, int], Awaitable[None]] | None,
                 has_space: Callable[[int], bool], held_back: Callable[[], int],
                 writeback_cache: bool = False,
                 sync_kernel: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__()
        self.enable_writeback_cache = writeback_cache     # read by pyfuse3 at INIT
        self.store = store
        self.views = views
        self.make_durable = make_durable
        self.has_space = has_space
        self.held_back = held_back           # bytes of the disk's free space writes cannot have (statfs)
        self.sync_kernel = sync_kernel       # brings in every dirty page the kernel holds (lseek)
        self.lookups: dict[int, int] = {}
        # of `lookups`, kept as they change (retention asks for them every few seconds,
        # and walking every inode the kernel holds took 0.1-0.4 s with 100,000 of them):
        self.held_per_view: dict[int, int] = {}   # view index -> how many of its inodes
        self.held_meta: set[int] = set()          # the `.sls/` tree's inodes (MetaView locals)
        self.opens: dict[int, int] = {}
        self.direct_opens: dict[int, int] = {}     # of `opens`, those with O_DIRECT
        self.direct_written: set[int] = set()   # since their last buffered open (write)
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self.held: set[int] = set()         # kernel inos we hold in the open-refcount table
        self.kernel_may_hold_writes = False  # writeback cache: a file was opened for writing
        self.initialized = trio.Event()     # set while answering the kernel's INIT request
        self.atime_policy = "relatime"      # options.atime_policy of the mount's options

    def init(self) -> None:
        # called by pyfuse3 while it answers INIT: tasks waiting for this event run after
        # the answer is written, when the kernel has applied the connection's settings
        self.initialized.set()

    # ----- helpers --------------------------------------------------------------------
    def _view(self, kino: int):
        index, local = split_ino(kino)
        return self.views[index], local

    def _volume(self, kino: int, *, writable: bool = False) -> tuple[Volume, int]:
        view, local = self._view(kino)
        if not isinstance(view, Volume) or (writable and view.readonly):
            raise FUSEError(errno.EROFS if writable else errno.EINVAL)
        return view, local

    def attrs(self, kino: int) -> EntryAttributes:
        view, local = self._view(kino)
        a = EntryAttributes()
        a.st_ino = kino
        a.st_blksize = BLOCK_SIZE
        if isinstance(view, MetaView):
            node = view.node(local)
            a.st_mode, a.st_size = view.mode_size(node)
            a.st_uid, a.st_gid = node.owner or (0, 0)
            a.st_nlink = 2 if stat.S_ISDIR(a.st_mode) else 1
            a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = view.created_ns
            a.entry_timeout = a.attr_timeout = 0
        else:
            node = view.inode(local)
            a.st_mode, a.st_nlink, a.st_uid, a.st_gid = node.mode, node.nlink, node.uid, node.gid
            a.st_rdev, a.st_size = node.rdev, node.size
            a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = node.atime_ns, node.mtime_ns, node.ctime_ns
            a.entry_timeout = a.attr_timeout = FROZEN_TIMEOUT if view.readonly else LIVE_TIMEOUT
            if stat.S_ISREG(node.mode):         # holes take no space (du, sparse-file detection)
                a.st_blocks = (view.allocated_bytes(local) + 511) // 512
                return a
        a.st_blocks = (a.st_size + 511) // 512
        return a

    def _entry(self, kino: int) -> EntryAttributes:
        """Attributes for a reply that adds one kernel lookup reference."""
        a = self.attrs(kino)
        self._take_reference(kino)
        return a

    def _take_reference(self, kino: int) -> None:
        """The kernel now holds one more lookup reference to `kino` (a LOOKUP, CREATE,
        READDIRPLUS entry...): counted in `lookups`, and its view in `held_per_view`."""
        count = self.lookups.get(kino, 0)
        self.lookups[kino] = count + 1
        if not count:
            view, local = split_ino(kino)
            _count(self.held_per_view, view, 1)
            if view == META_VIEW:
                self.held_meta.add(local)

    def _let_go(self, kino: int) -> None:
        """The kernel holds no reference to `kino` any more (`lookups` no longer has it)."""
        view, local = split_ino(kino)
        _count(self.held_per_view, view, -1)
        if view == META_VIEW:
            self.held_meta.discard(local)

    def _resolve(self, view, parent: int, name: bytes) -> int:
        """The kernel inode of entry `name` in directory `parent` of `view`."""
        if isinstance(view, MetaView):
            local, node = view.child(parent, os.fsdecode(name))
            if isinstance(node, Graft):
                index = self.views.graft(node)
                return kernel_ino(index, self.views[index].root_ino)
            return kernel_ino(META_VIEW, local)
        entry = view.lookup(parent, name)
        if entry is None:
            raise FUSEError(errno.ENOENT)
        return self._entry_ino(view, entry)

    def _entry_ino(self, view: Volume, entry: Entry) -> int:
        """The kernel inode a directory entry of volume view `view` leads to."""
        if entry.volume is not None:
            index = self.views.graft_in(view, entry.volume)
            return kernel_ino(index, self.views[index].root_ino)
        return kernel_ino(view.view_index, entry.ino)

    def _is_meta_entry(self, parent_kino: int, name: bytes) -> bool:
        return parent_kino == pyfuse3.ROOT_INODE and name == META_NAME

    def _same_volume(self, *kinos: int) -> Volume:
        views = {split_ino(k)[0] for k in kinos}
        if len(views) > 1:
            raise FUSEError(errno.EXDEV)
        volume, _ = self._volume(kinos[0], writable=True)
        return volume

    def _reclaim(self, kino: int) -> None:
        """Purge an unlinked inode once no name, lookup or open handle is left."""
        index, local = split_ino(kino)
        view = self.views[index]
        if not isinstance(view, Volume) or view.readonly:
            return
        try:
            node = view.inode(local)
        except FUSEError:
            return
        if node.nlink > 0 or self.lookups.get(kino) or self.opens.get(kino):
            return
        view.purge(local)
        if kino in self.held:
            self.held.discard(kino)
            self.store.release(view.name, local, HOLDER)

    def _after_unlink(self, volume: Volume, local: int) -> None:
        kino = kernel_ino(volume.view_index, local)
        try:
            node = volume.inode(local)
        except FUSEError:
            return
        if node.nlink == 0 and self.opens.get(kino) and kino not in self.held:
            self.store.hold(volume.name, local, HOLDER)
            self.held.add(kino)
        self._reclaim(kino)

    # ----- lookups and attributes -----------------------------------------------------
    async def lookup(self, parent_inode, name, ctx):
        if len(name) > NAME_MAX:
            raise FUSEError(errno.ENAMETOOLONG)
        if name in (b".", b".."):
            return self._entry(self._dot_lookup(parent_inode, name))
        if self._is_meta_entry(parent_inode, name):
            return self._entry(kernel_ino(META_VIEW, 1))
        view, parent = self._view(parent_inode)
        if isinstance(view, MetaView):
            return self._entry(self._resolve(view, parent, name))
        entry = view.lookup(parent, name)
        if entry is None:
            return _ABSENT_FROZEN if view.readonly else _ABSENT_LIVE
        attrs = self._entry(self._entry_ino(view, entry))
        _note_if_directory(view, entry, parent, attrs)
        return attrs

    def _dot_lookup(self, kino: int, name: bytes) -> int:
        """The kernel decoding a file handle (open_by_handle_at, an NFS export) of an inode
        it no longer holds asks for "." in it: is it still there? Only the main volume's
        inode numbers outlive a daemon (other views are numbered afresh by each: a handle
        from before a remount could name another file), and an inode with no name left is
        gone, as on ext4: ESTALE. To connect a forgotten directory to the tree it then asks
        for ".." in it, level by level (xfstests generic/467, 477, 777)."""
        index, local = split_ino(kino)
        if index != MAIN_VIEW:
            raise FUSEError(errno.ESTALE)
        volume = self.views[MAIN_VIEW]
        try:
            node = volume.inode(local)
        except FUSEError:
            raise FUSEError(errno.ESTALE) from None
        if node.nlink == 0:
            raise FUSEError(errno.ESTALE)
        if name == b"..":
            parent = volume.parent_of(local) if stat.S_ISDIR(node.mode) else None
            if parent is None:
                raise FUSEError(errno.ESTALE)
            return kernel_ino(MAIN_VIEW, parent)
        return kino

    async def forget(self, inode_list):
        for kino, count in inode_list:
            left = self.lookups.get(kino, 0) - count
            if left > 0:
                self.lookups[kino] = left
            else:
                if self.lookups.pop(kino, None) is not None:
                    self._let_go(kino)
                self.direct_written.discard(kino)   # its pages went with the kernel's inode
                self._reclaim(kino)

    async def getattr(self, inode, ctx):
        return self.attrs(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        volume, local = self._volume(inode, writable=True)
        node = volume.inode(local)
        if fields.update_size:
            if stat.S_ISDIR(node.mode):
                raise FUSEError(errno.EISDIR)
            if attr.st_size > node.size and not self.has_space(0):
                raise FUSEError(errno.ENOSPC)
            volume.truncate(local, attr.st_size)
            if not fields.update_mode:
                volume.drop_privileges(local, uid=ctx.uid, gid=ctx.gid)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid or fields.update_gid:
            if fields.update_uid:
                node.uid = attr.st_uid
            if fields.update_gid:
                node.gid = attr.st_gid
            if not stat.S_ISDIR(node.mode) and not fields.update_mode:
                node.mode &= ~stat.S_ISUID
                if node.mode & stat.S_IXGRP:
                    node.mode &= ~stat.S_ISGID
        if fields.update_atime:
            node.atime_ns = representable_time(attr.st_atime_ns)
        if fields.update_mtime:
            node.mtime_ns = representable_time(attr.st_mtime_ns)
        volume.touch(node, ctime=True)
        if fields.update_ctime:
            node.ctime_ns = representable_time(attr.st_ctime_ns)
        return self.attrs(inode)

    def fallocate(self, inode: int, mode: int, offset: int, length: int, fh: int) -> None:
        """fallocate(2) (passed by mount.extra_requests: pyfuse3 does not). The kernel lets
        through only KEEP_SIZE, PUNCH_HOLE (always with KEEP_SIZE) and ZERO_RANGE, and has
        written back its cached pages of the range first. A copy-on-write store reserves
        nothing ahead (as btrfs and ZFS): allocating makes the file that long (unless
        KEEP_SIZE), holes read as zeros, and is refused (ENOSPC) when the disk has not the
        room for the bytes past the end; punching and zeroing drop the range's blocks.
        Like a write, it drops the file's set-ID bits and capabilities (as the kernel's
        file_modified does for local file systems), by the opener of handle `fh`."""
        volume, local = self._volume(inode, writable=True)
        node = volume.inode(local)              # (a regular file: the kernel refuses the others)
        end = offset + length
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            volume.zero_range(local, offset, length, stamp_times=not self.enable_writeback_cache)
        elif not self.has_space(max(0, end - max(offset, node.size))):
            raise FUSEError(errno.ENOSPC)
        if not mode & FALLOC_FL_KEEP_SIZE and end > node.size:
            volume.truncate(local, end)
        self._drop_privileges(volume, local, fh)

    def copy_file_range(self, inode_in: int, offset_in: int, inode_out: int, offset_out: int,
                        length: int, fh_out: int) -> int:
        """copy_file_range(2) (passed by mount.extra_requests; the kernel has written back
        its cached pages of both ranges): whole blocks are shared (Volume.copy_range), not
        copied, between any two volumes of the store; the count copied, at most
        COPY_WRITTEN_MAX bytes read and written per request. EXDEV for `.sls/` files: the
        kernel then copies through reads and writes."""
        source, source_local = self._view(inode_in)
        if isinstance(source, MetaView):
            raise FUSEError(errno.EXDEV)
        volume, local = self._volume(inode_out, writable=True)
        if not self.has_space(min(length, COPY_WRITTEN_MAX)):
            raise FUSEError(errno.ENOSPC)
        copied = volume.copy_range(source, source_local, offset_in, local, offset_out, length,
                                   max_written=COPY_WRITTEN_MAX, stamp_times=not self.enable_writeback_cache)
        self._drop_privileges(volume, local, fh_out)
        return copied

    def _drop_privileges(self, volume: Volume, local: int, fh: int) -> None:
        """What a change of a file's data through handle `fh` drops (Volume.drop_privileges),
        as its opener made it; the kernel is told to forget the mode it holds, as after a
        direct write (after FALLOCATE it asks again anyway: the test passes without)."""
        handle = self.handles.get(fh)
        if handle is not None and volume.drop_privileges(local, uid=handle.uid, gid=handle.gid):
            forget_attributes(kernel_ino(handle.view, handle.ino))

    def lseek(self, inode: int, offset: int, whence: int) -> int | Awaitable[int]:
        """lseek(2)'s SEEK_DATA and SEEK_HOLE (passed by mount.extra_requests; the kernel
        answers the other whences itself): the offset found, ENXIO past the end, before the
        start (a negative offset, as the kernel's own file systems answer) or when no data
        follows. Files of `.sls/` are data from start to end. The kernel sends it
        without writing back the pages its writeback cache holds: while a handle that can
        write the file is open (a shared mapping holds one; at the last close the kernel
        writes them back), the answer waits for them to come in (`sync_kernel`), so that
        no data is called a hole and no size is too small."""
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise FUSEError(errno.EINVAL)
        if offset < 0:
            raise FUSEError(errno.ENXIO)
        if self.enable_writeback_cache and self.sync_kernel is not None and any(
                _writing(h.flags) and kernel_ino(h.view, h.ino) == inode for h in self.handles.values()):
            return self._lseek_after_sync(inode, offset, whence)
        return self._seek(inode, offset, whence)

    async def _lseek_after_sync(self, inode: int, offset: int, whence: int) -> int:
        await self.sync_kernel()
        return self._seek(inode, offset, whence)

    def _seek(self, inode: int, offset: int, whence: int) -> int:
        view, local = self._view(inode)
        if isinstance(view, MetaView):        # `.sls/` files: data from start to end
            size = self.attrs(inode).st_size
            found = None if offset >= size else offset if whence == os.SEEK_DATA else size
        else:
            found = view.seek(local, offset, hole=whence == os.SEEK_HOLE)
        if found is None:
            raise FUSEError(errno.ENXIO)
        return found

    async def readlink(self, inode, ctx):
        view, local = self._view(inode)
        if isinstance(view, MetaView):
            node = view.node(local)
            if not isinstance(node, VLink):
                raise FUSEError(errno.EINVAL)
            return os.fsencode(node.target)
        return view.readlink(local)

    async def statfs(self, ctx):
        """The store's disk, less the space writes cannot have (`held_back`): what `df`
        shows as available can be written or fallocated whole."""
        disk = os.statvfs(self.store.path)
        s = pyfuse3.StatvfsData()
        s.f_bsize = disk.f_bsize
        s.f_frsize = disk.f_frsize
        held_back = -(-self.held_back() // disk.f_frsize)
        s.f_blocks = disk.f_blocks
        s.f_bfree, s.f_bavail = max(0, disk.f_bfree - held_back), max(0, disk.f_bavail - held_back)
        main = self.views[MAIN_VIEW]
        s.f_files = max(main.sb.next_ino, 1) + 1_000_000
        s.f_ffree = s.f_favail = 1_000_000
        s.f_namemax = NAME_MAX
        return s

    # ----- creating and removing names ------------------------------------------------
    def _create(self, parent_inode, name, mode, ctx, rdev=0, target=None) -> int:
        if self._is_meta_entry(parent_inode, name):
            raise FUSEError(errno.EEXIST)
        volume, parent = self._volume(parent_inode, writable=True)
        node = volume.create(parent, name, mode, ctx.uid, ctx.gid, rdev, target)
        return kernel_ino(volume.view_index, node.ino)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return self._entry(self._create(parent_inode, name, mode, ctx, rdev))

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._entry(self._create(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), ctx))

    async def symlink(self, parent_inode, name, target, ctx):
        return self._entry(self._create(parent_inode, name, stat.S_IFLNK | 0o777, ctx, target=target))

    async def create(self, parent_inode, name, mode, flags, ctx):
        kino = self._create(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), ctx)
        return self._open_handle(kino, flags, ctx=ctx), self._entry(kino)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        if self._is_meta_entry(new_parent_inode, new_name):
            raise FUSEError(errno.EEXIST)
        volume = self._same_volume(inode, new_parent_inode)
        volume.link(split_ino(inode)[1], split_ino(new_parent_inode)[1], new_name)
        return self._entry(inode)

    async def unlink(self, parent_inode, name, ctx):
        await self._remove(parent_inode, name, directory=False)

    async def rmdir(self, parent_inode, name, ctx):
        await self._remove(parent_inode, name, directory=True)

    async def _remove(self, parent_inode, name, *, directory: bool) -> None:
        if self._is_meta_entry(parent_inode, name):
            raise FUSEError(errno.EROFS)
        volume, parent = self._volume(parent_inode, writable=True)
        entry = volume.lookup(parent, name)
        if entry is not None and entry.volume is not None:
            clone = self.views[self.views.live(entry.volume)]
            if not clone.is_empty_dir(clone.root_ino):
                raise FUSEError(errno.ENOTEMPTY)
        entry = volume.unlink(parent, name, directory=directory, entry=entry)
        if entry.volume is not None:
            self.views.forget_live(entry.volume)
            self.store.drop_volume(entry.volume)
            return
        self._after_unlink(volume, entry.ino)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if self._is_meta_entry(parent_inode_old, name_old) or self._is_meta_entry(parent_inode_new, name_new):
            raise FUSEError(errno.EROFS)
        if flags & ~(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE | RENAME_WHITEOUT):
            raise FUSEError(errno.EINVAL)
        volume = self._same_volume(parent_inode_old, parent_inode_new)
        old_parent = split_ino(parent_inode_old)[1]
        replaced = volume.rename(old_parent, name_old, split_ino(parent_inode_new)[1], name_new,
                                 noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
                                 exchange=bool(flags & pyfuse3.RENAME_EXCHANGE))
        if flags & RENAME_WHITEOUT:             # no await between: one change for a checkpoint
            volume.create(old_parent, name_old, stat.S_IFCHR, ctx.uid, ctx.gid, 0, None)
        if replaced is not None and replaced.volume is None:
            self._after_unlink(volume, replaced.ino)

    # ----- extended attributes --------------------------------------------------------
    async def setxattr(self, inode, name, value, ctx):
        volume, local = self._volume(inode, writable=True)
        volume.setxattr(local, name, value)

    async def getxattr(self, inode, name, ctx):
        # Asked before every write() (security.capability), so inodes known to have no
        # xattr are answered first, with nothing else looked at (Volume.has_no_xattrs).
        view, local = self._view(inode)
        if isinstance(view, MetaView) or view.has_no_xattrs(local):
            raise FUSEError(pyfuse3.ENOATTR)
        return view.getxattr(local, name)

    async def listxattr(self, inode, ctx):
        view, local = self._view(inode)
        return [] if isinstance(view, MetaView) else view.listxattr(local)

    async def removexattr(self, inode, name, ctx):
        volume, local = self._volume(inode, writable=True)
        volume.removexattr(local, name)

    # ----- files ----------------------------------------------------------------------
    def _open_handle(self, kino: int, flags: int, content: bytes | None = None, ctx=None) -> pyfuse3.FileInfo:
        fh = self._next_fh
        self._next_fh += 1
        handle = self.handles[fh] = Handle(*split_ino(kino), flags, content,
                                           *((ctx.uid, ctx.gid) if ctx is not None else ()))
        _count(self.opens, kino, 1)
        if handle.direct:
            _count(self.direct_opens, kino, 1)
        if self.enable_writeback_cache and _writing(flags):
            self.kernel_may_hold_writes = True
        keep_cache = handle.direct or kino not in self.direct_written
        if not handle.direct:
            self.direct_written.discard(kino)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    def open_for_writing(self) -> bool:
        """Whether any file handle (a shared mapping included) can still write. Callable
        from another thread too (the table is copied in one step under the GIL)."""
        return any(_writing(h.flags) for h in list(self.handles.values()))

    async def open(self, inode, flags, ctx):
        view, local = self._view(inode)
        writing = _writing(flags)
        if isinstance(view, MetaView):
            if writing:
                raise FUSEError(errno.EROFS)
            node = view.node(local)
            if not isinstance(node, VFile):
                raise FUSEError(errno.EISDIR)
            return self._open_handle(inode, flags, node.content())
        if writing and view.readonly:
            raise FUSEError(errno.EROFS)
        if flags & os.O_TRUNC and writing:      # libfuse asks for atomic O_TRUNC
            view.truncate(local, 0)
            if view.drop_privileges(local, uid=ctx.uid, gid=ctx.gid):
                forget_attributes(inode)
        if flags & os.O_ACCMODE != os.O_WRONLY and view.mark_read(local, self.atime_policy):
            # the reads may all come from the kernel's page cache (keep_cache) and never
            # reach read() below: the atime is stamped at the open
            forget_attributes(inode)
        return self._open_handle(inode, flags, ctx=ctx)

    async def read(self, fh, off, size):
        handle = self.handles[fh]
        if handle.content is not None:
            return handle.content[off:off + size]
        view = self.views[handle.view]
        data = view.read(handle.ino, off, size)
        view.mark_read(handle.ino, self.atime_policy)
        return data

    async def write(self, fh, off, buf):
        handle = self.handles[fh]
        volume = self.views[handle.view]
        if volume.readonly:
            raise FUSEError(errno.EROFS)
        if not self.has_space(len(buf)):
            raise FUSEError(errno.ENOSPC)
        if handle.flags & os.O_APPEND and not self.enable_writeback_cache:
            off = volume.inode(handle.ino).size
        written = volume.write(handle.ino, off, buf, stamp_times=not self.enable_writeback_cache)
        if handle.direct:
            self._after_direct_write(kernel_ino(handle.view, handle.ino))
        if volume.drop_privileges(handle.ino, uid=handle.uid, gid=handle.gid):
            # the kernel keeps the mode it holds after a write it did not send through
            # its cache (O_DIRECT): a stat would still show the set-ID bits
            forget_attributes(kernel_ino(handle.view, handle.ino))
        if volume.buffered_bytes > SEAL_BUFFERED_BYTES:   # bound memory between checkpoints
            try:
                volume.seal()
            except StoreError as exc:
                log.warning("sealing buffered writes failed, will retry: %s", exc)
        return written

    def _after_direct_write(self, kino: int) -> None:
        """Pages of `kino` that buffered opens cached may hold what a direct write just
        replaced. The kernel drops them itself before such a write, and after it unless it
        was submitted asynchronously (Linux AIO: it replies to io_submit before the write
        is done); a buffered read of the range while it is in flight caches the old data
        (xfstests generic/451). So: the next buffered open drops them (no keep_cache), and
        while buffered handles are open the kernel is told to drop them now, before the
        write's reply. Files only ever opened with O_DIRECT cost nothing.

        The daemon sees no difference between a direct WRITE and one the writeback cache
        sends with a direct handle of the file: a buffered write mixed with direct ones
        while a buffered handle is open costs the bounded wait of drop_cached_pages."""
        self.direct_written.add(kino)
        if self.opens.get(kino, 0) > self.direct_opens.get(kino, 0):
            drop_cached_pages(kino)

    async def flush(self, fh):
        # Nothing to do at close: with the writeback cache the kernel has sent the file's
        # pages and times before FLUSH; without it, writes are never held back in the
        # kernel. ENOSYS makes the kernel stop sending FLUSH: one request less per close.
        raise FUSEError(errno.ENOSYS)

    async def release(self, fh):
        handle = self.handles.pop(fh)
        kino = kernel_ino(handle.view, handle.ino)
        if handle.direct:
            _count(self.direct_opens, kino, -1)
        if not _count(self.opens, kino, -1):
            self._reclaim(kino)

    async def fsync(self, fh, datasync):
        await self._fsync(fh)

    async def _fsync(self, fh) -> None:
        """FSYNC and FSYNCDIR: a durable commit, or with no `make_durable` (a mount whose
        fsync makes no commit) ENOSYS, which the kernel takes as "fsync needs nothing
        more" for the rest of the connection: it still writes the file's dirty pages and
        times to the daemon and waits for them, then returns 0 without asking (FSYNCDIR
        alike: 4 requests less per SQLite transaction, 20.5 -> 16.5)."""
        if self.make_durable is None:
            raise FUSEError(errno.ENOSYS)
        handle = self.handles[fh]
        view = self.views[handle.view]
        if not view.readonly:
            await self.make_durable(view, handle.ino)

    # ----- directories ----------------------------------------------------------------
    async def opendir(self, inode, ctx):
        view, local = self._view(inode)
        if isinstance(view, MetaView):
            view.node(local)
        elif not stat.S_ISDIR(view.inode(local).mode):
            raise FUSEError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(*split_ino(inode), 0)
        return fh

    async def readdir(self, fh, start_id, token):
        handle = self.handles[fh]
        view = self.views[handle.view]
        if not self._dot_entries(token, kernel_ino(handle.view, handle.ino), start_id):
            return
        if isinstance(view, MetaView):
            children = list(view.node(handle.ino).children())
            for position in range(max(start_id, FIRST_COOKIE) - FIRST_COOKIE, len(children)):
                name, node = children[position]
                if isinstance(node, Graft):
                    index = self.views.graft(node)
                    kino = kernel_ino(index, self.views[index].root_ino)
                else:
                    kino = kernel_ino(META_VIEW, view.ino_for(handle.ino, name, node))
                if not pyfuse3.readdir_reply(token, os.fsencode(name), self.attrs(kino),
                                             FIRST_COOKIE + position + 1):
                    return
                self._take_reference(kino)
            return
        for cookie, name, entry in view.entries(handle.ino, start_id):
            if entry.volume is not None:
                index = self.views.graft_in(view, entry.volume)
                kino = kernel_ino(index, self.views[index].root_ino)
            else:
                kino = kernel_ino(handle.view, entry.ino)
            attrs = self.attrs(kino)
            if not pyfuse3.readdir_reply(token, name, attrs, cookie + 1):
                return
            _note_if_directory(view, entry, handle.ino, attrs)
            self._take_reference(kino)

    def _dot_entries(self, token, kino: int, start_id: int) -> bool:
        """"." and ".." first in every listing (offsets 1 and 2: entries' cookies start at
        schema.FIRST_COOKIE), as ls -a, find and xfstests (generic/401, 471) expect; False
        if the kernel's buffer is full. The kernel takes no lookup reference for them. The
        inode number of ".." is the parent's when known without a walk (Volume.known_parent:
        the kernel reaches a directory through a lookup or a listing of its parent, which
        note it), else FUSE_UNKNOWN_INO, as libfuse gives when it does not know (the root of
        a clone or of a `.sls` tree, whose parent is in another view)."""
        if start_id < 1 and not pyfuse3.readdir_reply(token, b".", self.attrs(kino), 1):
            return False
        if start_id < 2:
            parent = self.attrs(kino)
            parent.st_ino = self._known_parent(kino)
            if not pyfuse3.readdir_reply(token, b"..", parent, 2):
                return False
        return True

    def _known_parent(self, kino: int) -> int:
        """The kernel inode of the directory holding directory `kino`, or FUSE_UNKNOWN_INO."""
        if kino == pyfuse3.ROOT_INODE:
            return kino
        index, local = split_ino(kino)
        view = self.views[index]
        if isinstance(view, Volume) and local != view.root_ino:
            parent = view.known_parent(local)
            if parent is not None:
                return kernel_ino(index, parent)
        return FUSE_UNKNOWN_INO

    async def releasedir(self, fh):
        self.handles.pop(fh, None)

    async def fsyncdir(self, fh, datasync):
        await self._fsync(fh)

    async def access(self, inode, mode, ctx):
        return True


def representable_time(ns: int) -> int:
    """A time set by utimensat clamped to what an inode record holds (signed 64-bit
    nanoseconds: 1677-09-21 to 2262-04-11), as a kernel file system clamps to its own range
    (ext4: 1901-2446). Before, `touch -d 2446-05-10` was taken, and the next checkpoint
    failed to encode the inode and stopped the daemon (xfstests generic/634)."""
    return max(TIME_NS_MIN, min(TIME_NS_MAX, ns))


def _absent(timeout: float) -> EntryAttributes:
    """A negative entry the kernel keeps for `timeout` (no LOOKUP for the next open or
    stat of a missing name: programs probe many, e.g. Python's imports). Safe because
    every name is made through the kernel, which then forgets the negative entry itself;
    the one exception, a clone grafted by `sls clone`, calls `forget_entry`. Made once:
    pyfuse3 copies the attributes into each reply."""
    a = EntryAttributes()
    a.st_ino = 0
    a.entry_timeout = timeout
    return a


_ABSENT_LIVE = _absent(LIVE_TIMEOUT)
_ABSENT_FROZEN = _absent(FROZEN_TIMEOUT)


def _note_if_directory(view: Volume, entry: Entry, parent: int, attrs: EntryAttributes) -> None:
    """Tell `view` that `parent` holds `entry` if it is one of its directories (Volume.parent_of)."""
    if entry.volume is None and stat.S_ISDIR(attrs.st_mode):
        view.note_parent(entry.ino, parent)


def _count(counts: dict[int, int], key: int, change: int) -> int:
    """Add `change` to `counts[key]`; the new count (a key at zero is removed)."""
    left = counts.get(key, 0) + change
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
    return max(left, 0)


def _writing(flags: int) -> bool:
    return flags & os.O_ACCMODE != os.O_RDONLY
