"""The inode layer of one volume: POSIX objects kept in the volume's COW Tree.

This module knows nothing of FUSE requests or the kernel's inode numbers: it works in
the volume's own inode numbers and raises `FUSEError(errno)` for POSIX errors. The
layout of the keys is in `mount.schema`.

What is kept in memory (and why):
- inode records, cached after first use and written back to the Tree by `seal()`
  (a write changes size/mtime; rewriting the record on every write would be waste),
  and likewise the superblock's next inode number (a create would rewrite it);
- written file data, as per-block buffers, turned into chunks by `seal()` (this is
  the "writes buffered in the daemon" of the design: a checkpoint or fsync seals);
- a bounded LRU cache of decoded data blocks, so small reads do not fetch and
  decompress a whole block each time.
Directory entries, xattrs and symlinks go straight into the Tree (which is itself
in memory until the store flushes it at commit).

Simplifications: one block size for every file (schema.BLOCK_SIZE); atime is stamped
by `mark_read` per the mount's policy (relatime by default), not by `read`; inode
numbers are never reused.
"""
from __future__ import annotations

import errno
import heapq
import logging
import stat
import time
from collections import OrderedDict
from typing import Iterator

from pyfuse3 import FUSEError

from objectstore import StoreError

from . import schema
from .durable_points import DurablePoints
from .schema import BLOCK_SIZE, Entry, Inode, Superblock

log = logging.getLogger("slsfs.mount")
_DAY_NS = 86400 * 10**9
_BLOCK_CACHE_BYTES = 64 * 1024 * 1024
CAPABILITY_XATTR = b"security.capability"
# The xattr namespaces kept as stored values. The others are refused (EOPNOTSUPP) as a
# kernel file system does: `system.*` names are the kernel's (POSIX ACLs: stored as
# plain values they would neither change the mode nor be enforced, and refusing them
# makes cp -a, tar and rsync fall back to chmod), any other prefix is no namespace.
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.")


def _err(code: int) -> FUSEError:
    return FUSEError(code)


_ZEROS = bytes(BLOCK_SIZE)


def _is_zero(data: bytes | bytearray | memoryview) -> bool:
    """Whether a block (at most BLOCK_SIZE bytes) is all zeros: one memcmp that stops at
    the first non-zero byte (counting the zeros read the whole block: ~8% of the daemon's
    time under a sequential write). startswith, not ==: a memoryview compares with bytes
    byte by byte (243 us for a zero block, 5 with startswith)."""
    return _ZEROS.startswith(data)


_CLOCK_REALTIME_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)  # <linux/time.h>; Python names it from 3.13


def now_ns() -> int:
    """The time stamped on inodes: the kernel's coarse clock, which it uses itself for the
    times it sets (utimensat UTIME_NOW, writes through the writeback cache), so that a later
    change never carries an earlier time than the file's creation (as on ext4)."""
    return time.clock_gettime_ns(_CLOCK_REALTIME_COARSE)


class BlockCache:
    """LRU of decoded data chunks by chunk id, bounded in bytes (shared by all volumes)."""

    def __init__(self, capacity: int = _BLOCK_CACHE_BYTES) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, store, cid: bytes) -> bytes:
        data = self._items.get(cid)
        if data is not None:
            self._items.move_to_end(cid)
            return data
        data = store.get(cid)
        self.add(cid, data)
        return data

    def add(self, cid: bytes, data: bytes) -> None:
        """Keep `data`, the content of chunk `cid`, as the newest entry.

        Volume.seal() adds each block that was written in part (a database's page in a
        128 KiB block): the next write into that block would otherwise read the chunk
        back from the pack it was just appended to (a read, an lz4 decode and a hash
        check) after every seal."""
        if cid in self._items:
            self._items.move_to_end(cid)
            return
        self._items[cid] = data
        self._bytes += len(data)
        while self._bytes > self.capacity:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)


class Volume:
    """The files of one volume. `readonly` views (history, snapshots) refuse every change."""

    def __init__(self, store, tree, name: str, *, readonly: bool = False,
                 block_cache: BlockCache | None = None) -> None:
        self.store = store
        self.tree = tree
        self.name = name
        self.readonly = readonly
        self.block_cache = block_cache or BlockCache()
        raw = tree.get(schema.SUPER_KEY)
        if raw is None:
            raise schema.FormatError(f"volume {name!r} has no superblock: it was not created by slsfs")
        self.sb = Superblock.decode(raw)
        self._sb_dirty = False        # next_ino moved on: the superblock is written by seal()
        self._inodes: dict[int, Inode] = {}
        self._dirty_inodes: set[int] = set()
        self._buffers: dict[int, dict[int, bytearray | bytes | memoryview]] = {}
        self._stored_counts: dict[int, int] = {}   # ino -> number of data blocks in the Tree
        self._allocated: dict[int, int] = {}       # ino -> allocated_bytes, while nothing is buffered
        self._no_xattrs: set[int] = set()          # inodes known to have no xattr (see getxattr)
        self._unsealed_orphans: set[int] = set()   # orphan keys that seal() writes (see _note_links)
        self._walked_parents: dict[int, int] | None = None  # format 1 directories: _walk_parents
        self.buffered_bytes = 0
        self.changed = False          # anything not yet sealed into the Tree / committed
        self.durable_points = DurablePoints()      # which commit holds each inode's last change

    # ----- creation -------------------------------------------------------------------
    @staticmethod
    def format(tree, uid: int, gid: int, mode: int = 0o755) -> None:
        """Write an empty file system (superblock + root directory) into an empty tree."""
        now = now_ns()
        root = Inode(schema.ROOT_INO, stat.S_IFDIR | mode, 2, uid, gid,
                     atime_ns=now, mtime_ns=now, ctime_ns=now, parent=schema.ROOT_INO)
        tree.put(schema.SUPER_KEY, Superblock().encode())
        tree.put(schema.inode_key(schema.ROOT_INO), root.encode())

    @property
    def root_ino(self) -> int:
        return self.sb.root_ino

    def set_root(self, ino: int) -> None:
        """Make directory `ino` this volume's root (used right after cloning a subtree)."""
        self._writable()
        self.sb.root_ino = ino
        self.tree.put(schema.SUPER_KEY, self.sb.encode())
        self.changed = True

    # ----- inodes ---------------------------------------------------------------------
    def inode(self, ino: int) -> Inode:
        node = self._inodes.get(ino)
        if node is None:
            raw = self.tree.get(schema.inode_key(ino))
            if raw is None:
                raise _err(errno.ENOENT)
            node = self._inodes[ino] = Inode.decode(ino, raw)
        return node

    def touch(self, node: Inode, *, atime: bool = False, mtime: bool = False, ctime: bool = False) -> None:
        now = now_ns()
        if atime:
            node.atime_ns = now
        if mtime:
            node.mtime_ns = now
        if ctime:
            node.ctime_ns = now
        self.mark(node)

    def mark(self, node: Inode) -> None:
        self._writable()
        self._dirty_inodes.add(node.ino)
        self.changed = True

    def durable(self, ino: int, durable_id: int) -> bool:
        """Whether every change of inode `ino` (for a directory: of its entries too) is in
        a commit up to `durable_id`: nothing of it waits to be sealed or committed
        (mount.durable_points)."""
        return (ino not in self._dirty_inodes and ino not in self._buffers
                and self.durable_points.durable(ino, durable_id))

    def _writable(self) -> None:
        if self.readonly:
            raise _err(errno.EROFS)

    def _new_inode(self, mode: int, uid: int, gid: int, rdev: int = 0) -> Inode:
        ino = self.sb.next_ino
        self.sb.next_ino += 1
        self._sb_dirty = True
        now = now_ns()
        node = Inode(ino, mode, 2 if stat.S_ISDIR(mode) else 1, uid, gid, rdev,
                     atime_ns=now, mtime_ns=now, ctime_ns=now)
        self._inodes[ino] = node
        self._no_xattrs.add(ino)
        self.mark(node)
        return node

    def _named_inodes(self) -> Iterator[tuple[int, int, bytes]]:
        """(inode, parent directory, name) of every directory entry of this volume but
        grafted clones' roots. Walks the whole tree: only for rare paths."""
        for key, raw in self.tree.items(b"D", b"E"):
            entry = Entry.decode(raw)
            if entry.volume is None:
                yield entry.ino, int.from_bytes(key[1:9], "big"), schema.split_entry_key(key)[1]

    def path_of(self, ino: int) -> str:
        """One path of `ino` from the volume root, for error messages ("?" if it has no
        name left). Walks every directory entry: only for the rare error path."""
        if ino == self.root_ino:
            return "/"
        names: dict[int, tuple[int, bytes]] = {}
        for child, parent, name in self._named_inodes():
            names.setdefault(child, (parent, name))
        parts: list[str] = []
        while ino != self.root_ino and ino in names and len(parts) < 4096:
            ino, name = names[ino]
            parts.append(name.decode(errors="backslashreplace"))
        if ino != self.root_ino:
            return "?"
        return "/" + "/".join(reversed(parts))

    def parent_of(self, directory: int) -> int | None:
        """The directory holding `directory`'s one name (None: it has none), for the kernel
        reconnecting a directory it had forgotten (a file handle's decoding: open_by_handle_at,
        an NFS export), which asks for ".." once per forgotten level. A directory's inode
        record holds its parent (format 2); one of format 1 that nobody named since this
        daemon started (a lookup, a listing: note_parent) costs one walk of every entry."""
        if directory == self.root_ino:
            return directory
        node = self.inode(directory)
        if node.nlink == 0:
            return None
        if node.parent == schema.NO_PARENT:
            node.parent = self._walked_parent(directory)
        return node.parent or None

    def known_parent(self, directory: int) -> int | None:
        """The parent of `directory` if known without a walk (readdir's ".."), else None."""
        if directory == self.root_ino:
            return directory
        return self.inode(directory).parent or None

    def note_parent(self, directory: int, parent: int) -> None:
        """Directory `parent` holds directory `directory` (a lookup or a listing saw it): what
        a record of format 1 lacks, written with it if it is written again."""
        self.inode(directory).parent = parent

    def _walked_parent(self, directory: int) -> int:
        """The parent of a directory whose record does not hold it (format 1), from one walk
        of every entry that learns those of all directories holding entries (keeping every
        file's would cost memory per file), so that the levels above cost nothing. A
        directory empty at the walk (a leaf) costs a walk of its own (20 levels down in
        100,000 entries after a remount: one walk took 1.45 s)."""
        if self._walked_parents is None or directory not in self._walked_parents:
            self._walk_parents(directory)
        return self._walked_parents.get(directory, schema.NO_PARENT)

    def _walk_parents(self, directory: int) -> None:
        first = self._walked_parents is None
        found: dict[int, int] = {}
        holders: set[int] = set()
        walked = 0
        for child, parent, _ in self._named_inodes():
            walked += 1
            holders.add(parent)
            if first or child == directory:
                found.setdefault(child, parent)
        log.info("volume %s: directory %d has no parent in its record (format 1): walked %d "
                 "entries for it", self.name, directory, walked)
        if first:
            self._walked_parents = {child: found[child] for child in holders & found.keys()}
        if directory in found:
            self._walked_parents[directory] = found[directory]

    # ----- directories ----------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Entry | None:
        raw = self.tree.get(schema.entry_key(parent, name))
        return None if raw is None else Entry.decode(raw)

    def entries(self, parent: int, start_cookie: int = 0) -> Iterator[tuple[int, bytes, Entry]]:
        """(cookie, name, entry) of a directory in cookie order, from `start_cookie` on."""
        start = schema.entry_key_at(parent, max(start_cookie, schema.FIRST_COOKIE))
        end = schema.prefix_end(schema.dir_prefix(parent))
        for key, raw in self.tree.items(start, end):
            cookie, name = schema.split_entry_key(key)
            yield cookie, name, Entry.decode(raw)

    def is_empty_dir(self, ino: int) -> bool:
        return next(self.entries(ino), None) is None

    def _dir(self, ino: int) -> Inode:
        node = self.inode(ino)
        if not stat.S_ISDIR(node.mode):
            raise _err(errno.ENOTDIR)
        return node

    @staticmethod
    def check_name(name: bytes) -> None:
        if len(name) > schema.NAME_MAX:
            raise _err(errno.ENAMETOOLONG)
        if not name or b"/" in name or name in (b".", b".."):
            raise _err(errno.EINVAL)

    def _add_entry(self, parent: Inode, name: bytes, entry: Entry, is_dir: bool) -> None:
        self.tree.put(schema.entry_key(parent.ino, name), entry.encode())
        if is_dir:
            parent.nlink += 1
        self.touch(parent, mtime=True, ctime=True)

    def _remove_entry(self, parent: Inode, name: bytes, is_dir: bool) -> None:
        self.tree.delete(schema.entry_key(parent.ino, name))
        if is_dir:
            parent.nlink -= 1
        self.touch(parent, mtime=True, ctime=True)

    def create(self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int,
               rdev: int = 0, target: bytes | None = None) -> Inode:
        """A new file, directory, symlink (with `target`) or special file named `name`."""
        self._writable()
        self.check_name(name)
        parent = self._dir(parent_ino)
        if self.lookup(parent_ino, name) is not None:
            raise _err(errno.EEXIST)
        if parent.mode & stat.S_ISGID:          # BSD group semantics of setgid directories
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        node = self._new_inode(mode, uid, gid, rdev)
        if target is not None:
            self.tree.put(schema.symlink_key(node.ino), target)
            node.size = len(target)
        if stat.S_ISDIR(mode):
            node.parent = parent_ino
        self._add_entry(parent, name, Entry(node.ino), stat.S_ISDIR(mode))
        return node

    def graft(self, parent_ino: int, name: bytes, volume: str, root_ino: int) -> None:
        """Add an entry `name` that leads to the root of another volume (a clone)."""
        self._writable()
        self.check_name(name)
        parent = self._dir(parent_ino)
        if self.lookup(parent_ino, name) is not None:
            raise _err(errno.EEXIST)
        self._add_entry(parent, name, Entry(root_ino, volume), True)

    def link(self, ino: int, parent_ino: int, name: bytes) -> Inode:
        self._writable()
        self.check_name(name)
        node = self.inode(ino)
        if stat.S_ISDIR(node.mode):
            raise _err(errno.EPERM)
        parent = self._dir(parent_ino)
        if self.lookup(parent_ino, name) is not None:
            raise _err(errno.EEXIST)
        if node.nlink == 0:
            self._forget_orphan(ino)
        node.nlink += 1
        self.touch(node, ctime=True)
        self._add_entry(parent, name, Entry(ino), False)
        return node

    def unlink(self, parent_ino: int, name: bytes, *, directory: bool,
               entry: Entry | None = None) -> Entry:
        """Remove an entry (unlink or rmdir); the caller purges the inode once unused.
        `entry`: what `lookup(parent_ino, name)` returned just before, if the caller has it."""
        self._writable()
        parent = self._dir(parent_ino)
        if entry is None:
            entry = self.lookup(parent_ino, name)
        if entry is None:
            raise _err(errno.ENOENT)
        if entry.volume is not None:
            if not directory:
                raise _err(errno.EISDIR)
            self._remove_entry(parent, name, True)
            return entry
        node = self.inode(entry.ino)
        is_dir = stat.S_ISDIR(node.mode)
        if directory and not is_dir:
            raise _err(errno.ENOTDIR)
        if not directory and is_dir:
            raise _err(errno.EISDIR)
        if is_dir:
            if not self.is_empty_dir(entry.ino):
                raise _err(errno.ENOTEMPTY)
            node.nlink = 0
        else:
            node.nlink -= 1
        self._note_links(node)
        self.touch(node, ctime=True)
        self._remove_entry(parent, name, is_dir)
        return entry

    def _entry_is_dir(self, entry: Entry) -> bool:
        return entry.volume is not None or stat.S_ISDIR(self.inode(entry.ino).mode)

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
               *, noreplace: bool = False, exchange: bool = False) -> Entry | None:
        """Move an entry; returns the entry it replaced (whose inode lost a link), if any."""
        self._writable()
        self.check_name(new_name)
        src_dir, dst_dir = self._dir(old_parent), self._dir(new_parent)
        src = self.lookup(old_parent, old_name)
        if src is None:
            raise _err(errno.ENOENT)
        dst = self.lookup(new_parent, new_name)
        src_is_dir = self._entry_is_dir(src)
        if exchange:
            if dst is None:
                raise _err(errno.ENOENT)
            dst_is_dir = self._entry_is_dir(dst)
            self.tree.put(schema.entry_key(old_parent, old_name), dst.encode())
            self.tree.put(schema.entry_key(new_parent, new_name), src.encode())
            if src_is_dir != dst_is_dir and old_parent != new_parent:
                delta = 1 if src_is_dir else -1
                dst_dir.nlink += delta
                src_dir.nlink -= delta
            for entry, parent in ((src, new_parent), (dst, old_parent)):
                if entry.volume is None:
                    self.touch(self.inode(entry.ino), ctime=True)
                    self._moved(entry, parent)
            self.touch(src_dir, mtime=True, ctime=True)
            self.touch(dst_dir, mtime=True, ctime=True)
            return None
        if dst is not None:
            if noreplace:
                raise _err(errno.EEXIST)
            if dst.ino == src.ino and dst.volume == src.volume:
                return None                      # two links to one inode: POSIX says do nothing
            dst_is_dir = self._entry_is_dir(dst)
            if src_is_dir and not dst_is_dir:
                raise _err(errno.ENOTDIR)
            if dst_is_dir and not src_is_dir:
                raise _err(errno.EISDIR)
            if dst.volume is not None:
                raise _err(errno.EBUSY)          # a grafted clone is removed with rmdir, not replaced
            self.unlink(new_parent, new_name, directory=dst_is_dir)
        self._remove_entry(src_dir, old_name, src_is_dir)
        self._add_entry(dst_dir, new_name, src, src_is_dir)
        if src.volume is None:
            self.touch(self.inode(src.ino), ctime=True)
            self._moved(src, new_parent)
        return dst

    def _moved(self, entry: Entry, parent: int) -> None:
        """Entry `entry` (of this volume) is now in directory `parent` (its record is dirty:
        its ctime changed)."""
        node = self.inode(entry.ino)
        if stat.S_ISDIR(node.mode):
            node.parent = parent

    # ----- symlinks and xattrs --------------------------------------------------------
    def readlink(self, ino: int) -> bytes:
        target = self.tree.get(schema.symlink_key(ino))
        if target is None:
            raise _err(errno.EINVAL)
        return target

    def getxattr(self, ino: int, name: bytes) -> bytes:
        """The kernel asks for b"security.capability" before every write() to a file (it
        cannot remember the answer: pyfuse3 does not offer FUSE_HANDLE_KILLPRIV_V2), so
        a miss on an inode without any xattr is answered from `_no_xattrs` (inodes made
        here, and inodes whose xattrs were looked for once and found to be none)."""
        self.inode(ino)
        if ino in self._no_xattrs:
            raise _err(errno.ENODATA)
        value = self.tree.get(schema.xattr_key(ino, name))
        if value is None:
            if not self._has_xattrs(ino):
                self._no_xattrs.add(ino)
            raise _err(errno.ENODATA)
        return value

    def has_no_xattrs(self, ino: int) -> bool:
        """Whether `ino` is known to have no xattr (True only for an existing inode)."""
        return ino in self._no_xattrs

    def _xattr_items(self, ino: int) -> Iterator[tuple[bytes, bytes]]:
        prefix = schema.xattr_prefix(ino)
        return self.tree.items(prefix, schema.prefix_end(prefix))

    def _xattr_keys(self, ino: int) -> list[bytes]:
        return [key for key, _ in self._xattr_items(ino)]

    def _has_xattrs(self, ino: int) -> bool:
        # The first key only: pyfuse3 answers XATTR_CREATE/REPLACE with a getxattr, so a
        # miss must not cost a walk of all of an inode's xattrs (stress-ng sets thousands).
        return next(self._xattr_items(ino), None) is not None

    def listxattr(self, ino: int) -> list[bytes]:
        self.inode(ino)
        if ino in self._no_xattrs:
            return []
        start = len(schema.xattr_prefix(ino))
        return [key[start:] for key in self._xattr_keys(ino)]

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        self._writable()
        if not name.startswith(XATTR_NAMESPACES):
            raise _err(errno.EOPNOTSUPP)
        if len(name) > 255:
            raise _err(errno.ERANGE)
        if len(value) > 65536:
            raise _err(errno.E2BIG)
        node = self.inode(ino)
        self.tree.put(schema.xattr_key(ino, name), value)
        self._no_xattrs.discard(ino)
        self.touch(node, ctime=True)

    def drop_privileges(self, ino: int, *, uid: int, gid: int) -> bool:
        """What a write or a truncation by `uid`/`gid` does to a regular file's privileges:
        its file capabilities (security.capability) go, and unless `uid` is 0 (taken for
        CAP_FSETID) its set-user-ID bit, and its set-group-ID bit if the file is group-
        executable or `gid` is not its group. The kernel leaves this to the daemon
        (FUSE_HANDLE_KILLPRIV_V2, mount.init_flags). Costs two tests when there is nothing
        to drop. Whether anything was dropped."""
        node = self.inode(ino)
        mode = node.mode
        changed = ino not in self._no_xattrs and self.tree.delete(schema.xattr_key(ino, CAPABILITY_XATTR))
        if uid != 0 and mode & (stat.S_ISUID | stat.S_ISGID):
            node.mode &= ~stat.S_ISUID
            if mode & stat.S_IXGRP or gid != node.gid:
                node.mode &= ~stat.S_ISGID
            changed = changed or node.mode != mode
        if changed:
            self.touch(node, ctime=True)
        return changed

    def removexattr(self, ino: int, name: bytes) -> None:
        self._writable()
        node = self.inode(ino)
        if not self.tree.delete(schema.xattr_key(ino, name)):
            raise _err(errno.ENODATA)
        self.touch(node, ctime=True)

    # ----- file data ------------------------------------------------------------------
    def _stored_block(self, ino: int, block: int) -> bytes:
        cid = self.tree.get(schema.block_key(ino, block))
        if cid is None:
            return b""
        try:
            return self.block_cache.get(self.store, cid)
        except StoreError as exc:              # a corrupt or missing chunk: EIO for this file only
            log.error("volume %s file %s (inode %d) block %d: %s",
                      self.name, self.path_of(ino), ino, block, exc)
            raise _err(errno.EIO) from None

    def _block(self, ino: int, block: int) -> bytes | bytearray | memoryview:
        buffers = self._buffers.get(ino)
        if buffers is not None and block in buffers:
            return buffers[block]
        return self._stored_block(ino, block)

    def allocated_bytes(self, ino: int) -> int:
        """The bytes a regular file holds outside its holes (what st_blocks counts): its
        stored and buffered blocks, the last one only as far as the file size. `du`,
        and `cp`/`tar`/`rsync` guessing whether a file is sparse, read this.

        A stat must not walk the Tree (its block leaves are rarely in memory: that doubled
        the daemon's CPU per stat), so the answer is cached while nothing is buffered
        (seal() sets it for one-block files, the usual case), and the count of stored
        blocks of larger files is cached too; writes, truncation and seal() drop what
        they change. A buffered block of zeros counts until seal() makes it a hole."""
        cached = self._allocated.get(ino)
        if cached is not None:
            return cached
        node = self.inode(ino)
        buffers = self._buffers.get(ino, ())
        if node.size == 0:
            return 0
        if node.size <= BLOCK_SIZE:                  # most files: one block
            result = node.size if 0 in buffers or schema.block_key(ino, 0) in self.tree else 0
        else:
            stored = self._stored_counts.get(ino)
            if stored is None:
                prefix = schema.block_prefix(ino)
                stored = self._stored_counts[ino] = sum(
                    1 for _ in self.tree.entries(prefix, schema.prefix_end(prefix)))
            blocks = stored + sum(1 for b in buffers if schema.block_key(ino, b) not in self.tree)
            last, tail = divmod(node.size, BLOCK_SIZE)
            if tail and (last in buffers or schema.block_key(ino, last) in self.tree):
                result = (blocks - 1) * BLOCK_SIZE + tail
            else:
                result = blocks * BLOCK_SIZE
        if not buffers:
            self._allocated[ino] = result
        return result

    def read(self, ino: int, offset: int, size: int) -> bytes:
        node = self.inode(ino)
        end = min(offset + size, node.size)
        parts = []
        pos = offset
        while pos < end:
            block, start = divmod(pos, BLOCK_SIZE)
            stop = min(BLOCK_SIZE, start + end - pos)
            data = self._block(ino, block)[start:stop]
            if len(data) < stop - start:
                data = bytes(data) + bytes(stop - start - len(data))
            parts.append(data)
            pos += stop - start
        return b"".join(parts)

    def mark_read(self, ino: int, policy: str) -> bool:
        """Stamp the atime of a file being read under the mount's atime `policy`
        (options.atime_policy); whether it changed. Read-only trees never change."""
        if self.readonly or policy == "noatime":
            return False
        node = self.inode(ino)
        if policy == "relatime" and node.atime_ns > max(node.mtime_ns, node.ctime_ns) \
                and time.time_ns() - node.atime_ns <= _DAY_NS:
            return False
        self.touch(node, atime=True)
        return True

    def write(self, ino: int, offset: int, data: bytes, *, stamp_times: bool = True) -> int:
        """Buffer `data` at `offset`. `stamp_times=False` leaves mtime and ctime alone: the
        kernel's writeback cache keeps them and sends them with SETATTR.

        A whole block of a `bytes` request (FUSE's WRITE: up to 1 MiB) is buffered as a
        memoryview of it, not copied: the copy was ~8% of the daemon's CPU under a
        sequential write (py-spy). Other buffers (bytearray, memoryview) may change after
        the call and are copied. Blocks written in part are bytearrays (see seal())."""
        self._writable()
        node = self.inode(ino)
        self._allocated.pop(ino, None)
        buffers = self._buffers.setdefault(ino, {})
        pos, view = offset, memoryview(data)
        immutable = type(data) is bytes     # its blocks are kept as views of it, not copied
        while view:
            block, start = divmod(pos, BLOCK_SIZE)
            n = min(len(view), BLOCK_SIZE - start)
            old = buffers.get(block)
            if old is None and start == 0 and (n == BLOCK_SIZE or pos + n >= node.size):
                new = view[:n] if immutable else bytes(view[:n])  # whole block (or new tail): no read
                self.buffered_bytes += len(new)
            else:
                if old is None:
                    old = self._stored_block(ino, block)
                    self.buffered_bytes += BLOCK_SIZE
                new = old if isinstance(old, bytearray) else bytearray(old)
                if len(new) < start:
                    new.extend(bytes(start - len(new)))
                new[start:start + n] = view[:n]
            buffers[block] = new
            pos += n
            view = view[n:]
        if pos > node.size:
            node.size = pos
        self.touch(node, mtime=stamp_times, ctime=stamp_times)
        return len(data)

    def truncate(self, ino: int, size: int) -> None:
        self._writable()
        node = self.inode(ino)
        self._allocated.pop(ino, None)
        if size < node.size:
            keep_blocks, tail = divmod(size, BLOCK_SIZE)
            first_dropped = keep_blocks + (1 if tail else 0)
            self._drop_blocks(ino, first_dropped)
            if tail:
                buffers = self._buffers.setdefault(ino, {})
                buffers[keep_blocks] = bytearray(self._block(ino, keep_blocks)[:tail])
                self.buffered_bytes += tail
        node.size = size
        self.touch(node, mtime=True, ctime=True)

    def zero_range(self, ino: int, offset: int, length: int, *, stamp_times: bool = True) -> None:
        """Make `length` bytes at `offset` read as zeros, up to the file's size, which stays
        (fallocate's PUNCH_HOLE and ZERO_RANGE): the blocks wholly inside become holes (a
        file's last block counts whole from where it starts), the rest is written with
        zeros (which seal() makes a hole when a whole block is). `stamp_times` as write's."""
        self._writable()
        node = self.inode(ino)
        end = min(offset + length, node.size)
        whole_from = -(-offset // BLOCK_SIZE)
        whole_to = -(-end // BLOCK_SIZE) if end == node.size else end // BLOCK_SIZE
        if whole_from >= whole_to:
            pieces = [(offset, end)]
        else:
            pieces = [(offset, whole_from * BLOCK_SIZE), (whole_to * BLOCK_SIZE, end)]
            self._drop_blocks(ino, whole_from, whole_to)
        for start, stop in pieces:            # (each under two blocks)
            if start < stop:
                self.write(ino, start, bytes(stop - start), stamp_times=False)
        self.touch(node, mtime=stamp_times, ctime=stamp_times)

    def copy_range(self, source: Volume, source_ino: int, source_offset: int, ino: int, offset: int,
                   length: int, *, max_written: int, stamp_times: bool = True) -> int:
        """copy_file_range(2): copy `length` bytes of file `source_ino` of `source` (this
        volume or another of the store) from `source_offset` to file `ino` at `offset`, up
        to the source's end; the count copied, which stops short once `max_written` bytes
        were read and written (the caller asks again for the rest). A block that lies
        whole in both ranges at the same place, stored (not buffered) in the source, is
        shared, as a reflink: the destination's tree names the source's chunk, nothing is
        read or written. `stamp_times` as write's."""
        self._writable()
        length = max(0, min(length, source.inode(source_ino).size - source_offset))
        done = written = 0
        while done < length and written < max_written:
            at, to = source_offset + done, offset + done
            n = min(BLOCK_SIZE - to % BLOCK_SIZE, length - done)       # to the end of a destination block
            cid = source._shareable(source_ino, at // BLOCK_SIZE) if at % BLOCK_SIZE == to % BLOCK_SIZE == 0 \
                and n == BLOCK_SIZE else None
            if cid is None:
                self.write(ino, to, source.read(source_ino, at, n), stamp_times=False)
                written += n
            else:
                self._drop_blocks(ino, to // BLOCK_SIZE, to // BLOCK_SIZE + 1)
                self.tree.put(schema.block_key(ino, to // BLOCK_SIZE), cid, refs=[cid])
            done += n
        node = self.inode(ino)
        node.size = max(node.size, offset + done)
        self.touch(node, mtime=stamp_times, ctime=stamp_times)
        return done

    def _shareable(self, ino: int, block: int) -> bytes | None:
        """The chunk id of a stored block of `ino` that no buffered write has changed since."""
        if block in self._buffers.get(ino, ()):
            return None
        return self.tree.get(schema.block_key(ino, block))

    def seek(self, ino: int, offset: int, *, hole: bool) -> int | None:
        """lseek's SEEK_HOLE (`hole`) or SEEK_DATA from `offset`: where the next hole (the
        end of the file at the latest) or the next data begins, None if none does before the
        end. Data is counted a block at a time: a block stored or buffered (even of zeros,
        until seal() makes it a hole) is data, the others are holes."""
        size = self.inode(ino).size
        if offset >= size:
            return None
        block = offset // BLOCK_SIZE
        for data in self._data_blocks(ino, block):
            if hole and data != block:
                break                    # `block` is a hole
            if not hole:
                return max(offset, data * BLOCK_SIZE)
            block += 1
        else:
            if not hole:
                return None
        return min(max(offset, block * BLOCK_SIZE), size)

    def _data_blocks(self, ino: int, first: int) -> Iterator[int]:
        """The numbers of the blocks of `ino` holding data from block `first` on, in order."""
        buffered = sorted(b for b in self._buffers.get(ino, ()) if b >= first)
        stored = (schema.split_block_key(key) for key, _ in
                  self.tree.items(schema.block_key(ino, first), schema.prefix_end(schema.block_prefix(ino))))
        last = -1
        for block in heapq.merge(buffered, stored):
            if block != last:
                yield block
                last = block

    def _drop_blocks(self, ino: int, first: int, end: int | None = None) -> None:
        """Drop the blocks of `ino` from block `first` on (up to `end`, not included)."""
        buffers = self._buffers.get(ino, {})
        for block in [b for b in buffers if b >= first and (end is None or b < end)]:
            del buffers[block]
        for key in self._stored_block_keys(ino, first, end):
            self.tree.delete(key)
        self._stored_counts.pop(ino, None)
        self._allocated.pop(ino, None)
        self.changed = True

    def _stored_block_keys(self, ino: int, first: int, end: int | None = None) -> list[bytes]:
        """The keys of the stored blocks of `ino` from block `first` on, up to `end` (not
        included; maybe absent ones too). Every stored block lies below the size of the
        cached inode record (write extends the size, truncate drops the blocks past it,
        seal cuts at it): a file of at most one block has only block 0 to look at, and a
        delete of one key costs half of a range walk of the Tree (the purge of each small
        unlinked file)."""
        node = self._inodes.get(ino)
        if node is not None and node.size <= BLOCK_SIZE:
            return [schema.block_key(ino, 0)] if first == 0 and end != 0 else []
        start = schema.block_key(ino, first)
        stop = schema.prefix_end(schema.block_prefix(ino)) if end is None else schema.block_key(ino, end)
        return [key for key, _ in self.tree.items(start, stop)]

    def purge(self, ino: int) -> None:
        """Delete an inode that has no links and no users left: record, data, xattrs."""
        self._writable()
        self._drop_blocks(ino, 0)
        self._buffers.pop(ino, None)
        if ino not in self._no_xattrs:
            for key in self._xattr_keys(ino):
                self.tree.delete(key)
        node = self._inodes.pop(ino, None)
        if node is None or stat.S_ISLNK(node.mode):
            self.tree.delete(schema.symlink_key(ino))
        self.tree.delete(schema.inode_key(ino))
        self._forget_orphan(ino)
        self._no_xattrs.discard(ino)
        self._dirty_inodes.discard(ino)
        self.changed = True

    def orphans(self) -> list[int]:
        """Inodes with no links left that are not purged yet (open, or the daemon stopped)."""
        stored = {int.from_bytes(key[1:9], "big") for key, _ in self.tree.items(b"O", b"P")}
        return sorted(stored | self._unsealed_orphans)

    def _note_links(self, node: Inode) -> None:
        """Record an inode that lost its last link as an orphan. The record only matters
        in a commit (it says what a restart must reclaim), and most such inodes are purged
        before the next seal (the kernel forgets an unlinked file it does not hold open
        right away): so seal() writes it, and a purge before that costs no Tree change."""
        if node.nlink == 0:
            self._unsealed_orphans.add(node.ino)

    def _forget_orphan(self, ino: int) -> None:
        if ino in self._unsealed_orphans:
            self._unsealed_orphans.discard(ino)
        else:
            self.tree.delete(schema.orphan_key(ino))

    # ----- sealing --------------------------------------------------------------------
    def seal(self) -> None:
        """Move every buffered block and inode change into the Tree (chunks stored now).

        On a store error (e.g. ENOSPC) the blocks not yet stored stay buffered and the
        error propagates; calling seal() again later retries them.
        """
        for ino in list(self._buffers):
            self._stored_counts.pop(ino, None)
            self._allocated.pop(ino, None)
            node = self._inodes.get(ino)
            buffers = self._buffers[ino]
            sealed = sorted(buffers)
            for block in sealed:
                data = buffers[block]
                if node is not None:
                    data = data[:max(0, node.size - block * BLOCK_SIZE)]
                key = schema.block_key(ino, block)
                if _is_zero(data):
                    self.tree.delete(key)
                else:
                    patched = isinstance(data, bytearray)
                    if patched:
                        data = bytes(data)
                    cid = self.store.put(data)
                    self.tree.put(key, cid, refs=[cid])
                    if patched:     # written in part: the next such write reads it from here
                        self.block_cache.add(cid, data)
                del buffers[block]
            del self._buffers[ino]
            if node is not None and node.size <= BLOCK_SIZE and sealed == [0]:
                self._allocated[ino] = 0 if _is_zero(data) else node.size
        self.buffered_bytes = 0
        self.durable_points.sealed(self._dirty_inodes)
        if self._dirty_inodes and self.sb.format != schema.FORMAT_VERSION:
            self._sb_dirty = True     # a volume of format 1 gets records of format 2: says so
        for ino in sorted(self._dirty_inodes):
            node = self._inodes.get(ino)
            if node is not None:
                self.tree.put(schema.inode_key(ino), node.encode())
        self._dirty_inodes.clear()
        for ino in sorted(self._unsealed_orphans):
            self.tree.put(schema.orphan_key(ino), b"")
        self._unsealed_orphans.clear()
        if self._sb_dirty:
            self.tree.put(schema.SUPER_KEY, self.sb.encode())
            self.sb.format = schema.FORMAT_VERSION
            self._sb_dirty = False
