"""Store: one directory holding chunks, trees, named roots and the commit history.

A store directory holds (docs/FORMAT.md, "Store directory")::

    FORMAT        JSON: format name, version, secret seed, uuid (written once, at init)
    lock          flock'd exclusively by the one writer, which writes its "PID FD" there
    packs/        pack files and their indexes (objectstore.pack)

Everything else (commits, tags, the catalog of retained commits) is a record in
the packs, so that one fsync makes a commit and all its chunks durable at once.

The *working state* is a map of named roots, carried from commit to commit:
``vol/<name>`` for volumes (live trees, flushed by every commit), ``openrefs``
for the open-refcount table, and whatever the layers above name (process images,
snapshots). `commit()` records the whole map in one small record.

A Store is not thread-safe: call it from one thread at a time.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import logging
import math
import os
import re
import time
import uuid as uuidlib
import weakref
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from . import pack as fmt
from .chunks import DATA, NODE, ChunkId, chunk_id
from .errors import FormatError, NotFound, StoreError, StoreLocked
from .packstore import PackStore, PendingSync, fsync_dir
from .retention import PRESSURE_LEVELS, RetentionPolicy, squeezed
from .tree import NodeCache, Tree

log = logging.getLogger("slsfs.store")
STORE_FORMAT = "slsfs-store"
STORE_VERSION = 1
RECORD_VERSION = 1
VOLUME_PREFIX = "vol/"
SNAPSHOT_PREFIX = "snap/"
OPENREFS = "openrefs"
GC_MIN_GROWTH = 256 << 20      # gc_due: bytes the packs must grow by since the last collection
PENDING_WEIGHT = 3             # gc_due: pages not compressed yet count as a third of their size
LOW_SPACE_MIN_GROWTH = 1 << 20  # gc_due on a disk short of space: the least growth worth a collection
# A disk is short of space, after a collection, with less free than a twentieth of its size
# (16 MiB at least, 1 GiB at most): history is then thinned harder (retention.squeezed)
LOW_SPACE_SHARE, LOW_SPACE_MIN, LOW_SPACE_MAX = 20, 16 << 20, 1 << 30
LOCK_RECORD_BYTES = 32         # the lock file's "PID FD" record, space-padded, newline-ended


class PendingBarrier:
    """Store.begin_barrier's result: `wait()` (any thread) blocks until its commits are durable."""

    def __init__(self, sync: PendingSync | None, commit_id: int):
        self.sync, self.commit_id = sync, commit_id

    def wait(self) -> None:
        if self.sync is not None:
            self.sync.wait()


MAX_NAME_BYTES = 255
_RESERVED_NAMES = ("latest", "HEAD", "head")
_GROUP_NUMBER = re.compile(r"[^#]*#[0-9]+")     # GROUP#N or #N: a persistence group's checkpoint number


def check_tag_name(name: str) -> None:
    """Refuse a checkpoint name that `Store.resolve` would read as something else (an id,
    'latest', a time) or that cannot be shown or used as a file name."""
    why = None
    if not name:
        why = "it is empty"
    elif name.isdigit():
        why = "all digits read as a checkpoint id"
    elif name in _RESERVED_NAMES or "~" in name:
        why = "'latest', 'HEAD' and '~' name the newest checkpoints"
    elif "/" in name or not name.isprintable():
        why = "it holds '/' or a control character"
    elif name != name.strip():
        why = "it begins or ends with white space, which is dropped when a checkpoint is looked up"
    elif _GROUP_NUMBER.fullmatch(name):
        why = "NAME#N and #N name a persistence group's checkpoint number"
    elif len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        why = f"it is longer than {MAX_NAME_BYTES} bytes"
    else:
        try:
            datetime.fromisoformat(name)
            why = "it reads as an ISO-8601 time (the newest checkpoint at or before it)"
        except ValueError:
            pass
    if why is not None:
        raise StoreError(f"bad checkpoint name {name!r}: {why}; pick another")


@dataclass(frozen=True)
class Commit:
    """One checkpoint: the whole map of named roots at one instant."""

    id: int
    parent: int | None
    time: float
    label: str
    roots: dict[str, ChunkId] = field(hash=False)

    def to_json(self) -> dict:
        return {"id": self.id, "parent": self.parent, "time": self.time, "label": self.label,
                "roots": {k: v.hex() for k, v in self.roots.items()}}


def _record(kind: str, **fields) -> bytes:
    return json.dumps({"v": RECORD_VERSION, "type": kind, **fields}, separators=(",", ":")).encode()


def _parse_record(payload: bytes, store: Path) -> dict:
    try:
        rec = json.loads(payload)
    except ValueError:
        raise FormatError(f"a store record is not valid JSON: the store is damaged; run `sls fsck {store}`") from None
    if rec.get("v") != RECORD_VERSION:
        raise FormatError(f"store record version {rec.get('v')}; this slsfs reads {RECORD_VERSION}")
    return rec


def _write_format(path: Path, meta: dict) -> None:
    """Write the store's FORMAT file (docs/FORMAT.md) atomically and durably."""
    tmp = path / "FORMAT.tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path / "FORMAT")
    fsync_dir(path)


def _commit_from(rec: dict) -> Commit:
    return Commit(rec["id"], rec["parent"], rec["time"], rec["label"],
                  {k: ChunkId(bytes.fromhex(v)) for k, v in rec["roots"].items()})


class Store:
    """A copy-on-write object store in one directory. See the module docstring."""

    def __init__(self, path: Path, *, readonly: bool, _create: dict | None = None):
        self.path = Path(path)
        self.readonly = readonly
        self._lock_fd: int | None = None
        meta = _create or self._read_format()
        self.uuid: str = meta["uuid"]
        self.seed: int = int(meta["seed"], 16)
        if not readonly:
            self._lock()
        try:
            self.packs = PackStore(self.path / "packs", self.seed, readonly=readonly,
                                   verify_dedup=meta.get("verify_dedup", False))
        except BaseException:        # (a damaged or lost pack): the lock is not kept
            self._unlock()
            raise
        try:
            self._load(meta)
        except BaseException:
            self.close()
            raise

    def _load(self, meta: dict) -> None:
        """The rest of opening: the retention policy of `meta` (FORMAT) and the history."""
        self.cache = NodeCache()
        try:
            self.retention = RetentionPolicy(**meta.get("retention", {}))
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{self.path}/FORMAT: its retention policy is not valid ({exc}); correct its "
                              f"`retention` there") from None
        self.space_pressure = 0                  # retention_now's level: see _judge_space
        self._pressure_raised = False            # ... and not applied by a collection yet (gc_due)
        self._recent: set[bytes] = set()
        self._trees: weakref.WeakSet[Tree] = weakref.WeakSet()
        self._commits: dict[int, Commit] = {}  # always in increasing id order: the last is the head
        self._tags: dict[str, int] = {}
        self.lost_tags: dict[str, int] = {}      # names read whose commit is gone (not served; fsck says so)
        self._next_id = 1
        self._durable_id = 0
        self._load_history()
        newest = self.head
        self._roots: dict[str, ChunkId] = dict(newest.roots) if newest else {}
        self._volumes: dict[str, Tree] = {}
        self._openrefs: Tree | None = None
        self._gc_baseline: int | None = None     # pack bytes after the last collection (gc_due)
        self._gc_disk_baseline: int | None = None    # ... on disk, as they are (gc_due's space rule)

    # -- opening and creating ---------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike, *, verify_dedup: bool = False,
             seed: int | None = None) -> "Store":
        """Create a new, empty store directory and open it for writing."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StoreError(f"{path} already exists and is not an empty directory; "
                             "choose a new path for the store")
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # history holds process memory: owner only
        meta = {"format": STORE_FORMAT, "version": STORE_VERSION,
                "seed": f"{seed if seed is not None else int.from_bytes(os.urandom(8), 'little'):016x}",
                "uuid": str(uuidlib.uuid4()), "verify_dedup": verify_dedup,
                "created": time.time()}
        _write_format(path, meta)
        return cls(path, readonly=False, _create=meta)

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False) -> "Store":
        """Open an existing store; StoreLocked if another process writes to it."""
        return cls(Path(path), readonly=readonly)

    def _read_format(self) -> dict:
        try:
            meta = json.loads((self.path / "FORMAT").read_text())
        except FileNotFoundError:
            raise NotFound(f"{self.path} is not a slsfs store (no FORMAT file); "
                           f"create one with `sls init {self.path}`") from None
        except PermissionError:
            raise StoreError(f"{self.path}: permission denied (a store is readable by its owner only)") from None
        except ValueError:
            raise FormatError(f"{self.path}/FORMAT is damaged (not JSON)") from None
        if meta.get("format") != STORE_FORMAT:
            raise FormatError(f"{self.path} is not a slsfs store")
        if meta.get("version") != STORE_VERSION:
            raise FormatError(f"{self.path}: store format version {meta.get('version')}; "
                              f"this slsfs reads version {STORE_VERSION}")
        return meta

    def _lock(self) -> None:
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"{self.path} is in use by another process (a mount or daemon); "
                              "stop it first, or open the store read-only") from None
        try:                     # the holder's record, in place (fixed width: no truncation)
            os.pwrite(fd, f"{os.getpid()} {fd}".ljust(LOCK_RECORD_BYTES - 1).encode() + b"\n", 0)
        except OSError:          # a full disk must not keep the store shut: no record, then
            os.ftruncate(fd, 0)  # (readers ask /proc/locks; docs/FORMAT.md, "lock")
        self._lock_fd = fd

    def _load_history(self) -> None:
        """Commits and tags from the store records. A catalog holds every commit it keeps
        and every tag, and all that was written after it follows it in pack order, so
        reading starts at the newest catalog (at every record if that catalog is damaged
        or from before catalogs held their commits)."""
        records = self.packs.meta_records(from_last=fmt.CATALOG)
        first = next(records, None)
        if first is not None and first[0] == fmt.CATALOG and "commits" in _parse_record(first[1], self.path):
            records = itertools.chain([first], records)
        else:
            records = self.packs.meta_records()
        upto, live, tags = 0, None, {}
        commits: dict[int, Commit] = {}
        for kind, payload in records:
            rec = _parse_record(payload, self.path)
            if kind == fmt.COMMIT:
                commits[rec["id"]] = _commit_from(rec)
            elif kind == fmt.CATALOG:
                upto, live, tags = rec["upto"], set(rec["live"]), dict(rec["tags"])
                commits.update((c["id"], _commit_from(c)) for c in rec.get("commits", ()))
            elif kind == fmt.TAG:
                if rec["commit"] is None:
                    tags.pop(rec["name"], None)
                else:
                    tags[rec["name"]] = rec["commit"]
        self._next_id = max([upto, *commits]) + 1 if commits or upto else 1
        self._commits = {i: c for i, c in sorted(commits.items())
                         if i > upto or (live is not None and i in live)}
        self._tags = {name: cid for name, cid in tags.items() if cid in self._commits}
        self.lost_tags = {name: cid for name, cid in tags.items() if cid not in self._commits}   # for fsck
        self._durable_id = max(self._commits, default=0)

    def close(self) -> None:
        try:
            self.packs.close()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- chunks -------------------------------------------------------------------

    def put(self, data: bytes, kind: int = DATA) -> ChunkId:
        """Store `data` (once, whatever how often it is put); return its id."""
        cid = self.packs.put(data, kind)
        self._recent.add(cid)
        return cid

    def put_many(self, datas: Sequence[bytes], kind: int = DATA, *,
                 compress_later: bool = False, rarely_read: bool = False) -> list[ChunkId]:
        """[put(d, kind) for d in datas]: the same ids and the same records on disk, at a
        fraction of the cost per chunk (a checkpoint's pages: PackStore.put_many, which
        says what `compress_later` and `rarely_read` do)."""
        ids = self.packs.put_many(datas, kind, compress_later=compress_later, rarely_read=rarely_read)
        self._recent.update(ids)
        return ids

    def id_of(self, data: bytes, kind: int = DATA) -> ChunkId:
        """The id `put(data, kind)` gives, without storing: safe from any thread."""
        return chunk_id(kind, data, self.seed)

    def get(self, cid: bytes) -> bytes:
        return self.packs.get(cid)

    def get_many(self, cids: Sequence[bytes]) -> list[bytes]:
        """The contents of many chunks, in the order asked (duplicates allowed): the same
        as [get(c) for c in cids] but reads neighbouring records together (restore's pages)."""
        return self.packs.get_many(cids)

    def index_some(self) -> bool:
        """Add some more chunks to the index (PackStore.index_some: ~10 ms); whether more
        are left. A reader about to read most chunks, one batch at a time, calls it between
        its other work rather than building the whole index at its first large batch."""
        return self.packs.index_some()

    def has(self, cid: bytes) -> bool:
        return self.packs.has(cid)

    def kind(self, cid: bytes) -> int:
        return self.packs.kind(cid)

    def data_chunks(self, cids: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        """(the DATA chunks among `cids`, the others: NODE chunks and ids not in the store)."""
        return self.packs.data_chunks(cids)

    def ids(self) -> Iterator[ChunkId]:
        return self.packs.ids()

    # -- trees and roots ----------------------------------------------------------

    def tree(self, root: bytes | None = None, *, leaf_bytes: int | None = None) -> Tree:
        """A COW tree starting from `root` (None: empty), its leaves split past `leaf_bytes`
        (default: the tree's, objectstore.tree.LEAF_BYTES)."""
        t = Tree(self, root, self.cache, leaf_bytes=leaf_bytes)
        self._trees.add(t)
        return t

    def empty_root(self) -> ChunkId:
        """The id of the empty tree (a leaf with no entries)."""
        return self.put(b"L\x01\x00\x00\x00\x00", NODE)

    def roots(self) -> dict[str, ChunkId]:
        """The working map of named roots (volumes flushed first)."""
        self._flush_working()
        return dict(self._roots)

    def set_root(self, name: str, root: bytes | None) -> None:
        """Name a tree root in the working state (None removes the name)."""
        if name.startswith(VOLUME_PREFIX) or name == OPENREFS:
            raise StoreError(f"root name {name!r} is reserved; use the volume API")
        if root is None:
            self._roots.pop(name, None)
        else:
            if not self.has(root):
                raise NotFound(f"root {bytes(root).hex()} of {name!r} is not in the store")
            self._roots[name] = ChunkId(root)

    def _flush_working(self) -> None:
        for name, t in self._volumes.items():
            self._roots[VOLUME_PREFIX + name] = t.flush() or self.empty_root()
        if self._openrefs is not None:
            self._roots[OPENREFS] = self._openrefs.flush() or self.empty_root()

    # -- volumes ----------------------------------------------------------------------

    def volumes(self) -> list[str]:
        return sorted(n[len(VOLUME_PREFIX):] for n in self._roots if n.startswith(VOLUME_PREFIX))

    def volume(self, name: str) -> Tree:
        """The live, writable tree of volume `name`."""
        t = self._volumes.get(name)
        if t is None:
            root = self._roots.get(VOLUME_PREFIX + name)
            if root is None:
                raise NotFound(f"volume {name!r} does not exist (volumes: {', '.join(self.volumes()) or 'none'})")
            t = self._volumes[name] = self.tree(root)
        return t

    def create_volume(self, name: str, root: bytes | None = None) -> Tree:
        """A new volume, empty or sharing every chunk of `root` (an O(1) clone)."""
        if not name or "/" in name or len(name.encode()) > 255:
            raise StoreError(f"bad volume name {name!r}: 1-255 bytes, no '/'")
        if VOLUME_PREFIX + name in self._roots:
            raise StoreError(f"volume {name!r} already exists")
        if root is not None and not self.has(root):
            raise NotFound(f"root {bytes(root).hex()} is not in the store")
        t = self._volumes[name] = self.tree(root)
        self._roots[VOLUME_PREFIX + name] = t.flush() or self.empty_root()
        return t

    def drop_volume(self, name: str) -> None:
        self.volume(name)
        del self._volumes[name]
        del self._roots[VOLUME_PREFIX + name]

    def snapshot(self, volume: str, name: str) -> ChunkId:
        """Retain the volume's current root as snapshot `name`: O(1)."""
        if SNAPSHOT_PREFIX + name in self._roots:
            raise StoreError(f"snapshot {name!r} already exists")
        root = self.volume(volume).flush() or self.empty_root()
        self._roots[SNAPSHOT_PREFIX + name] = root
        return root

    def snapshots(self) -> dict[str, ChunkId]:
        return {n[len(SNAPSHOT_PREFIX):]: r for n, r in self._roots.items()
                if n.startswith(SNAPSHOT_PREFIX)}

    # -- open refcounts ----------------------------------------------------------------

    def _openref_tree(self) -> Tree:
        if self._openrefs is None:
            self._openrefs = self.tree(self._roots.get(OPENREFS))
        return self._openrefs

    def replace_openrefs(self, root: bytes) -> None:
        """Adopt another open-refcount table (a received or restored checkpoint's)."""
        self._openrefs = self.tree(root)

    @staticmethod
    def _openref_key(volume: str, ino: int, holder: str = "") -> bytes:
        return volume.encode() + b"\0" + ino.to_bytes(8, "big") + holder.encode()

    def hold(self, volume: str, ino: int, holder: str) -> None:
        """Record that unlinked inode `ino` of `volume` is still open by `holder`."""
        self._openref_tree().put(self._openref_key(volume, ino, holder), b"")

    def release(self, volume: str, ino: int, holder: str) -> bool:
        """Drop one holder; True if nobody holds the inode any more."""
        t = self._openref_tree()
        t.delete(self._openref_key(volume, ino, holder))
        return next(t.prefix(self._openref_key(volume, ino)), None) is None

    def holders(self, volume: str) -> dict[int, set[str]]:
        """Unlinked-but-open inodes of `volume` and who holds each."""
        out: dict[int, set[str]] = {}
        prefix = volume.encode() + b"\0"
        for key, _ in self._openref_tree().prefix(prefix):
            ino = int.from_bytes(key[len(prefix):len(prefix) + 8], "big")
            out.setdefault(ino, set()).add(key[len(prefix) + 8:].decode())
        return out

    # -- commits -------------------------------------------------------------------

    def commit(self, label: str = "", *, durable: bool = True, taken: float | None = None) -> Commit:
        """Record the working state as a new checkpoint, dated now or at `taken` (a unix
        time: a received checkpoint keeps the time it was taken in the sending store).

        durable=True returns once the commit and everything it names are on disk;
        durable=False returns at once, and `barrier()` waits for durability."""
        self._flush_working()
        head = self.head
        c = Commit(self._next_id, head.id if head else None, time.time() if taken is None else taken, label,
                   dict(self._roots))
        mark = self.packs.mark()
        rec = c.to_json()
        self.packs.append_meta(fmt.COMMIT, _record("commit", **rec))
        if durable:
            try:
                self.packs.sync()
            except StoreError:
                self.packs.rollback(mark)
                raise
        self._commits[c.id] = c
        self._next_id += 1
        self._recent.clear()
        if durable:
            self._durable_id = c.id
        return c

    def barrier(self) -> int:
        """Wait until every commit so far is durable; return the newest durable id."""
        pending = self.begin_barrier()
        pending.wait()
        return self.end_barrier(pending)

    def begin_barrier(self) -> "PendingBarrier":
        """barrier() in halves, so that the owner's thread can go on (serving a mount,
        putting chunks) during the fsync: call `.wait()` of the result in any thread, then
        end_barrier(it) in the owner's thread. Commits made meanwhile are not covered."""
        return PendingBarrier(self.packs.begin_sync(), next(reversed(self._commits), 0))

    def end_barrier(self, pending: "PendingBarrier") -> int:
        """After pending.wait(): the commits it covers are durable; the newest durable id."""
        if pending.sync is not None:
            self.packs.end_sync(pending.sync)
        self._durable_id = max(self._durable_id, pending.commit_id)
        return self._durable_id

    @property
    def durable_id(self) -> int:
        return self._durable_id

    @property
    def head(self) -> Commit | None:
        """The newest commit."""
        return self._commits[next(reversed(self._commits))] if self._commits else None

    def log(self) -> list[Commit]:
        """Every retained commit, newest first."""
        return list(reversed(self._commits.values()))

    def commit_by_id(self, cid: int) -> Commit:
        try:
            return self._commits[cid]
        except KeyError:
            raise NotFound(f"checkpoint {cid} does not exist (or was thinned by retention)") from None

    def resolve(self, spec: str | int) -> Commit:
        """A commit by id, tag, 'latest' (optionally '~N' back) or ISO-8601 time."""
        if isinstance(spec, int):
            return self.commit_by_id(spec)
        spec = spec.strip()
        if spec.isdigit():
            return self.commit_by_id(int(spec))
        if spec in self._tags:
            return self._commits[self._tags[spec]]
        base, _, back = spec.partition("~")
        if base in ("latest", "HEAD", "head"):
            ids = sorted(self._commits, reverse=True)
            n = int(back or 0) if (back or "0").isdigit() else -1
            if not ids or n < 0 or n >= len(ids):
                raise NotFound(f"no checkpoint {spec!r} (the store has {len(ids)})")
            return self._commits[ids[n]]
        try:
            when_us = round(datetime.fromisoformat(spec).timestamp() * 1e6)
        except ValueError:
            raise NotFound(f"no checkpoint id, name or time matches {spec!r}") from None
        # ISO-8601 text has microsecond precision: compare in whole microseconds, so a
        # time printed from a checkpoint's own timestamp finds that checkpoint; the newest
        # by time, then by id (a received checkpoint keeps the time it was taken: older
        # than local ones made before it arrived)
        older = [c for c in self._commits.values() if math.floor(c.time * 1e6) <= when_us]
        if not older:
            raise NotFound(f"no checkpoint at or before {spec}")
        return max(older, key=lambda c: (math.floor(c.time * 1e6), c.id))

    def tag(self, name: str, commit_id: int | None = None) -> int:
        """Name a commit (default: the newest); named commits are kept forever."""
        check_tag_name(name)
        if commit_id is None:
            if self.head is None:
                raise NotFound("the store has no checkpoint to name yet")
            commit_id = self.head.id
        self.commit_by_id(commit_id)
        self.packs.append_meta(fmt.TAG, _record("tag", name=name, commit=commit_id))
        self.packs.sync()
        self._tags[name] = commit_id
        return commit_id

    def untag(self, name: str) -> None:
        if name not in self._tags:
            raise NotFound(f"no checkpoint named {name!r}")
        self.packs.append_meta(fmt.TAG, _record("tag", name=name, commit=None))
        self.packs.sync()
        del self._tags[name]

    def tags(self) -> dict[str, int]:
        return dict(self._tags)

    # -- maintenance ----------------------------------------------------------------------

    def forget(self, keep: set[int], *, sync: bool = True) -> None:
        """Drop every commit not in `keep` (tagged and newest always stay): a catalog
        record naming those kept is written, and synced unless `sync` is False (GC: its
        own sync before it deletes anything makes it durable). Used by retention and GC."""
        keep = set(keep) | set(self._tags.values())
        if self.head:
            keep.add(self.head.id)
        self._append_catalog(keep)
        if sync:
            self.packs.sync()
        self._commits = {i: c for i, c in self._commits.items() if i in keep}

    def renew_catalog(self) -> None:
        """Append (not sync) a catalog of every retained commit and tag: it supersedes every
        earlier store record, so that GC may delete packs holding such records once it is
        durable (a copy of an old catalog would land after commits made since, and hide
        them from the next opening)."""
        self._append_catalog(set(self._commits))

    def _append_catalog(self, keep: set[int]) -> None:
        live = sorted(keep & set(self._commits))
        self.lost_tags = {}                      # the catalog names only the tags served
        self.packs.append_meta(fmt.CATALOG, _record(
            "catalog", upto=self._next_id - 1, live=live, tags=self._tags,
            commits=[self._commits[i].to_json() for i in live]))

    def live_roots(self) -> set[ChunkId]:
        """Every root the garbage collector must keep: retained commits, the working
        state, trees in use in this process and chunks put since the last commit."""
        for t in list(self._trees):
            if t.dirty:
                t.flush()
        out = set(self.roots().values())
        for c in self._commits.values():
            out.update(c.roots.values())
        out.update(r for t in list(self._trees) if (r := t.flush()) is not None)
        out.update(self._recent)
        return out

    def gc(self, progress=None, also_keep=None, prune=None) -> dict:
        """Retention (or an explicit retention.Prune), then free what no kept commit
        reaches, to the end (objectstore.gc.collect; a server runs gc.Collection's steps
        between its requests instead)."""
        from .gc import collect
        return collect(self, progress=progress, also_keep=also_keep, prune=prune)

    def note_collected(self, live_bytes: int) -> None:
        """A collection has ended, having found `live_bytes` stored bytes live: gc_due
        measures growth from here, and the budget of pages kept as they are follows the
        live bytes (PackStore.note_live)."""
        disk = self.packs.disk_bytes()
        self._gc_baseline, self._gc_disk_baseline = self._gc_size(disk), disk
        self.packs.note_live(live_bytes)
        self._judge_space()

    def set_retention(self, changes: dict) -> None:
        """Change the store's retention policy (fields of RetentionPolicy: `changes`),
        durably: the FORMAT file's `retention`. ValueError for a setting that is unknown
        or out of range, with nothing changed."""
        if self.readonly:
            raise StoreError("the store is open read-only: its retention policy cannot change")
        policy = self.retention.changed(changes)
        _write_format(self.path, {**self._read_format(), "retention": asdict(policy)})
        self.retention = policy

    def retention_status(self) -> dict:
        """The policy (`policy`), the one applied now (`applied`: squeezed while the disk
        is short of space) and the space-pressure level, as `sls retention` shows them."""
        return {"policy": asdict(self.retention), "applied": asdict(self.retention_now),
                "space_pressure": self.space_pressure}

    @property
    def retention_now(self) -> RetentionPolicy:
        """The policy retention and collections apply now: the store's, squeezed while its
        disk is short of space (`space_pressure`)."""
        return squeezed(self.retention, self.space_pressure)

    def _judge_space(self) -> None:
        """After a collection: a disk still short of space (LOW_SPACE_*) raises the pressure
        a level, and the next collection, which thins history harder, is due at once; one with
        twice that free lowers it a level (what was forgotten is gone; the tiers apply
        again to what comes)."""
        disk = os.statvfs(self.path)
        free, size = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
        low = min(max(size // LOW_SPACE_SHARE, LOW_SPACE_MIN), LOW_SPACE_MAX)
        self._pressure_raised = free < low and self.space_pressure < PRESSURE_LEVELS
        if self._pressure_raised:
            self.space_pressure += 1
            log.warning("the disk of store %s is short of space (%d MiB free after a collection): unnamed "
                        "history is thinned harder from now on (%s); named checkpoints stay", self.path,
                        free >> 20, self.retention_now)
        elif free >= 2 * low and self.space_pressure:
            self.space_pressure -= 1

    def gc_due(self) -> bool:
        """Whether a long-running writer should collect now: the packs have doubled since
        the last collection (or since open) and grown by at least GC_MIN_GROWTH, so
        collections cost little compared with what they give back; or the pages kept as
        they are have used their budget (pending_over_budget); or the disk is running
        short (`short_of_space`), or stayed short after the last one (`_judge_space`)."""
        disk = self.packs.disk_bytes()            # (a stat of every pack: once)
        size = self._gc_size(disk)
        if self._gc_baseline is None:
            self._gc_baseline = size
        return (size >= max(2 * self._gc_baseline, self._gc_baseline + GC_MIN_GROWTH)
                or self.pending_over_budget() or self._pressure_raised or self.short_of_space(disk))

    def short_of_space(self, disk: int | None = None) -> bool:
        """Whether the packs have grown since the last collection by a quarter of the space
        still free on the store's disk (and by LOW_SPACE_MIN_GROWTH at least). Without it a
        store whose disk has less free space than the doubling rule waits for (its live
        bytes, GC_MIN_GROWTH at least) filled the disk with what retention had forgotten:
        checkpoints and writes then failed with ENOSPC though most of the packs were
        garbage. The collections come closer together as the disk fills; with plenty of
        space this never comes before the doubling rule. Such a collection compacts the
        active pack too (objectstore.gc: it may hold all the garbage of a small disk).
        `disk`: the packs' bytes on disk, if the caller has them."""
        disk = self.packs.disk_bytes() if disk is None else disk
        if self._gc_disk_baseline is None:
            self._gc_disk_baseline = disk
        grown = disk - self._gc_disk_baseline
        if grown < LOW_SPACE_MIN_GROWTH:
            return False
        free = os.statvfs(self.path)
        return grown >= free.f_bavail * free.f_frsize // 4

    def pending_over_budget(self) -> bool:
        """Whether the pages kept as they are have used their budget: the last pages put
        were compressed at once for want of it (PackStore.over_budget), until a collection
        compresses the others (gc_due; it compacts the active pack too: Collection.steps)."""
        return self.packs.over_budget

    def _gc_size(self, disk: int) -> int:
        """The packs' size as gc_due weighs it: a checkpoint's pages stored as they are until
        a collection compresses them (PackStore.pending_compression) count as a third,
        about what lz4 leaves of a server's heap page (a Redis page: ~32%), so that
        collections come after as many checkpoints as when pages were compressed at once
        (counted whole, a Redis group at 100 Hz collected 2.5x as often: 5-6 collections
        in 40 s instead of 2, and its daemon's CPU per checkpoint rose, 12.9 -> 14.6 ms),
        the disk between two holding up to ~3x as much. `disk`: the packs' bytes on disk."""
        pending = self.packs.pending_bytes()
        return disk - pending + pending // PENDING_WEIGHT

    def fsck(self, progress=None) -> list[str]:
        from .fsck import check
        return check(self, progress=progress)

    def stats(self) -> dict:
        from .gc import usage
        return usage(self)
