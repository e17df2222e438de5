"""What changed in a volume between two checkpoints, as paths (`sls diff`).

The two versions of a volume's tree share every node that did not change, and
objectstore.Tree.changes skips shared nodes, so finding the changed records costs
O(changes). Naming them costs one pass over the newer version's directory entries
(a record names its inode, not its path; the older version's entries are the newer's
with the changed ones put back), then path lookups: no file data is read, and nothing
goes through the kernel (walking two checkpoints of 20,000 files through FUSE took
~12 s to find one changed file; this takes ~0.1 s).

What counts, path by path, as comparing two directory walks would see it:
- added / removed: a path only in the newer / the older version (everything under a
  directory that appears or goes, and under a renamed directory: its old paths removed,
  its new ones added);
- changed: a path in both whose inode differs (replaced) or whose inode's record (mode,
  owner, size, mtime, ctime, link count; not atime: a read is not a change), data,
  extended attributes or link target changed; a directory whose entries changed is
  changed (its mtime moved). So a file that gained a hard link is changed (its link
  count and ctime moved), as `stat` shows it, where a walk comparing sizes and mtimes
  sees nothing.
Grafted volumes (clones made with `sls clone`) are compared inside, as their own volumes
at the two checkpoints. A hard-linked inode's change is reported under each name.

`diff_steps` is a generator that yields between slices of work (every YIELD_EVERY records
read), so that the daemon serves its requests while a large diff runs (the same shape as
objectstore.gc.Collection.steps).
"""
from __future__ import annotations

import stat
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator

from objectstore import Store

from . import schema
from .history import VOLUME_PREFIX

YIELD_EVERY = 2000              # records read between two yields of diff_steps


@dataclass
class TreeDiff:
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)

    def to_json(self) -> dict:
        return {"added": sorted(self.added), "removed": sorted(self.removed), "changed": sorted(self.changed)}


@dataclass
class _Version:
    """A volume at one checkpoint, and where its names are."""
    store: Store
    roots: dict                                        # the checkpoint's Commit.roots
    tree: object
    root_ino: int
    links: dict[int, list[tuple[int, bytes]]]          # ino -> [(parent ino, name)]
    grafts: dict[tuple[int, bytes], str]               # (parent ino, name) -> grafted volume
    known_paths: dict[int, list[str]] = field(default_factory=dict)   # ino -> paths (`paths`)

    def lookup(self, path: str) -> schema.Entry | None:
        """The entry at `path` (relative, '/'-separated); a graft ends the walk."""
        entry: schema.Entry | None = schema.Entry(self.root_ino)
        for part in path.split("/") if path else []:
            if entry is None or entry.volume is not None:
                return None
            raw = self.tree.get(schema.entry_key(entry.ino, _encode(part)))
            entry = None if raw is None else schema.Entry.decode(raw)
        return entry

    def paths(self, ino: int) -> list[str]:
        """Every path of inode `ino` from the volume's root ([] if not under it). Iterative:
        a tree may be deeper than Python's recursion limit."""
        memo = self.known_paths
        memo.setdefault(self.root_ino, [""])
        pending, opened = [ino], set()
        while pending:
            top = pending[-1]
            if top in memo:
                pending.pop()
                continue
            parents = [parent for parent, _ in self.links.get(top, ()) if parent not in memo]
            if parents and top not in opened:         # their paths first (once: a damaged tree
                opened.add(top)                       # with a cycle must not loop for ever)
                pending.extend(parents)
                continue
            pending.pop()
            memo[top] = [_join(parent_path, _decode(name)) for parent, name in self.links.get(top, ())
                         for parent_path in memo.get(parent, ())]
        return memo[ino]

    def is_dir(self, entry: schema.Entry) -> bool:
        if entry.volume is not None:
            return True
        raw = self.tree.get(schema.inode_key(entry.ino))
        return raw is not None and stat.S_ISDIR(schema.Inode.decode(entry.ino, raw).mode)

    def below(self, entry: schema.Entry, path: str) -> Iterator[str]:
        """Every path under directory `entry` at `path`, grafted volumes included (depth
        first, with a stack of its own: a tree may be deeper than Python's recursion limit)."""
        stack: list[tuple[_Version, schema.Entry, str]] = [(self, entry, path)]
        while stack:
            version, directory, where = stack.pop()
            if directory.volume is not None:
                grafted = _version_without_names(version.store, version.roots, directory.volume)
                stack.append((grafted, schema.Entry(grafted.root_ino), where))
                continue
            for key, raw in version.tree.prefix(schema.dir_prefix(directory.ino)):
                child = schema.Entry.decode(raw.value)
                child_path = _join(where, _decode(schema.split_entry_key(key)[1]))
                yield child_path
                if version.is_dir(child):
                    stack.append((version, child, child_path))


def diff_steps(store: Store, old_roots: dict, new_roots: dict, volume: str, result: TreeDiff) -> Iterator[None]:
    """Fill `result` with the paths added, removed and changed in `volume` from the
    checkpoint with `old_roots` to the one with `new_roots` (Commit.roots), yielding
    between slices of work."""
    yield from _diff_volume(store, old_roots, new_roots, volume, "", result)


def _diff_volume(store: Store, old_roots: dict, new_roots: dict, volume: str, prefix: str,
                 result: TreeDiff) -> Iterator[None]:
    old_root, new_root = old_roots.get(VOLUME_PREFIX + volume), new_roots.get(VOLUME_PREFIX + volume)
    if old_root == new_root and _volumes(old_roots) == _volumes(new_roots):
        return                           # (the same tree, but a clone grafted in it may have changed)
    changes = []
    for n, change in enumerate(store.tree(old_root).changes(store.tree(new_root)), 1):
        changes.append(change)
        if n % YIELD_EVERY == 0:
            yield
    new = yield from _version(store, new_roots, volume)
    old = _version_from_newer(store, old_roots, volume, new, changes)
    candidates: set[str] = set()
    touched: set[int] = set()                          # inodes whose record or content changed
    for key, before, after in changes:
        kind = key[:1]
        if kind == b"D":
            parent, name = _parent_name(key)
            for side in (old, new):
                candidates.update(_join(path, _decode(name)) for path in side.paths(parent))
        elif kind in (b"I", b"B", b"X", b"L"):
            ino = int.from_bytes(key[1:9], "big")
            if kind == b"I" and before is not None and after is not None and \
                    _as_compared(ino, before.value) == _as_compared(ino, after.value):
                continue
            touched.add(ino)
            candidates.update(old.paths(ino))
            candidates.update(new.paths(ino))
    shown = _prefixed(prefix)
    gone_or_new: set[str] = set()                      # paths whose whole subtree is already listed
    for n, path in enumerate(sorted(candidates, key=lambda p: p.count("/")), 1):
        if not _under_any(path, gone_or_new):
            yield from _compare(path, old, new, touched, shown, result, gone_or_new)
        if n % YIELD_EVERY == 0:
            yield
    for graft in set(old.grafts.values()) & set(new.grafts.values()):
        for path in _graft_paths(new, graft) & _graft_paths(old, graft):
            yield from _diff_volume(store, old_roots, new_roots, graft, shown(path), result)


def _compare(path: str, old: _Version, new: _Version, touched: set[int], shown: Callable[[str], str],
             result: TreeDiff, gone_or_new: set[str]) -> Iterator[None]:
    if not path and shown(path) == "":
        return                                           # the mount's own root is not one of its paths
    before, after = old.lookup(path), new.lookup(path)
    if before is None and after is None:
        return
    if before is None or after is None:
        side, entry, into = (new, after, result.added) if before is None else (old, before, result.removed)
        into.add(shown(path))
        if side.is_dir(entry):
            gone_or_new.add(path)
            for n, below in enumerate(side.below(entry, path), 1):
                into.add(shown(below))
                if n % YIELD_EVERY == 0:
                    yield
        return
    if before != after:
        result.changed.add(shown(path))
        if old.is_dir(before) or new.is_dir(after):      # replaced: what is under it, by path
            gone_or_new.add(path)
            under_old = set(old.below(before, path)) if old.is_dir(before) else set()
            yield
            under_new = set(new.below(after, path)) if new.is_dir(after) else set()
            result.removed.update(map(shown, under_old - under_new))
            result.added.update(map(shown, under_new - under_old))
            result.changed.update(map(shown, under_old & under_new))
    elif after.volume is None and after.ino in touched:
        result.changed.add(shown(path))


def _version(store: Store, roots: dict, volume: str) -> Iterator[None]:
    """`volume` at the checkpoint with `roots`, its names read from its directory entries
    (the generator's return value)."""
    version = _version_without_names(store, roots, volume)
    links: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for n, (key, entry) in enumerate(version.tree.prefix(b"D"), 1):
        _add_name(links, version.grafts, key, entry.value)
        if n % YIELD_EVERY == 0:
            yield
    version.links = dict(links)
    return version


def _version_from_newer(store: Store, roots: dict, volume: str, newer: _Version, changes: list) -> _Version:
    """`volume` at the older checkpoint: its names are `newer`'s with the entries in
    `changes` (Tree.changes from this version to `newer`) put back."""
    version = _version_without_names(store, roots, volume)
    version.links = defaultdict(list, {ino: list(names) for ino, names in newer.links.items()})
    version.grafts = dict(newer.grafts)
    entry_changes = [(key, before, after) for key, before, after in changes if key[:1] == b"D"]
    for key, _, after in entry_changes:
        if after is not None:
            place, entry = _parent_name(key), schema.Entry.decode(after.value)
            if entry.volume is not None:
                version.grafts.pop(place, None)
            else:
                version.links[entry.ino] = [p for p in version.links[entry.ino] if p != place]
    for key, before, _ in entry_changes:
        if before is not None:
            _add_name(version.links, version.grafts, key, before.value)
    return version


def _version_without_names(store: Store, roots: dict, volume: str) -> _Version:
    tree = store.tree(roots.get(VOLUME_PREFIX + volume))
    raw = tree.get(schema.SUPER_KEY)
    root_ino = schema.Superblock.decode(raw).root_ino if raw is not None else schema.ROOT_INO
    return _Version(store, roots, tree, root_ino, {}, {})


def _add_name(links: dict, grafts: dict, key: bytes, value: bytes) -> None:
    entry = schema.Entry.decode(value)
    if entry.volume is not None:
        grafts[_parent_name(key)] = entry.volume      # its ino is the grafted volume's
    else:
        links[entry.ino].append(_parent_name(key))


def _graft_paths(side: _Version, volume: str) -> set[str]:
    return {_join(path, _decode(name)) for (parent, name), grafted in side.grafts.items()
            if grafted == volume for path in side.paths(parent)}


def _volumes(roots: dict) -> dict:
    return {name: root for name, root in roots.items() if name.startswith(VOLUME_PREFIX)}


def _as_compared(ino: int, raw: bytes) -> schema.Inode:
    """An inode record without what is no change: its atime (a read), and its parent (a
    record of format 1 written again gains it; a move shows in the entries and the ctime)."""
    inode = schema.Inode.decode(ino, raw)
    inode.atime_ns = 0
    inode.parent = schema.NO_PARENT
    return inode


def _parent_name(key: bytes) -> tuple[int, bytes]:
    return int.from_bytes(key[1:9], "big"), schema.split_entry_key(key)[1]


def _under_any(path: str, roots: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:n]) in roots for n in range(1, len(parts)))


def _prefixed(prefix: str) -> Callable[[str], str]:
    """How a path of a grafted volume is shown: under the graft's own path."""
    return lambda path: f"{prefix}/{path}" if prefix and path else (prefix or path)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _decode(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")
