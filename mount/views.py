"""Views: every tree the mount serves, and how their inodes become kernel inode numbers.

One mount shows several trees at once: the live volume (the root), live clone volumes
grafted into it, the virtual `.sls/` tree, and read-only volume trees of checkpoints
and snapshots. Each is a *view* with its own small index; a kernel inode number is
`index << VIEW_SHIFT | local inode number`. View 0 is the mount's own volume (so its
root, inode 1, is FUSE's root inode), view 1 is `.sls/`.

Simplification: views are never evicted; a daemon that browses very many old
checkpoints keeps one small object per visited checkpoint until it stops.
"""
from __future__ import annotations

import errno
import stat
import time

from pyfuse3 import FUSEError

from .history import Graft, VDir, VFile, VLink, VNode
from .volume import Volume

VIEW_SHIFT = 40
LOCAL_MASK = (1 << VIEW_SHIFT) - 1
MAIN_VIEW = 0
META_VIEW = 1


def kernel_ino(view: int, local: int) -> int:
    return view << VIEW_SHIFT | local


def split_ino(kino: int) -> tuple[int, int]:
    return kino >> VIEW_SHIFT, kino & LOCAL_MASK


class MetaView:
    """The `.sls/` virtual tree: stable inode numbers per path, nodes rebuilt on demand."""

    readonly = True

    def __init__(self, root: VNode) -> None:
        self.created_ns = time.time_ns()
        self._nodes: dict[int, VNode] = {1: root}
        self._paths: dict[int, tuple[str, ...]] = {1: ()}
        self._inos: dict[tuple[str, ...], int] = {(): 1}

    @property
    def root_ino(self) -> int:
        return 1

    def node(self, ino: int) -> VNode:
        try:
            return self._nodes[ino]
        except KeyError:
            raise FUSEError(errno.ENOENT) from None

    def ino_for(self, parent: int, name: str, node: VNode) -> int:
        path = self._paths[parent] + (name,)
        ino = self._inos.get(path)
        if ino is None:
            ino = self._inos[path] = len(self._inos) + 1
            self._paths[ino] = path
        self._nodes[ino] = node
        return ino

    def child(self, parent: int, name: str) -> tuple[int, VNode]:
        node = self.node(parent).lookup(name)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if isinstance(node, Graft):
            return 0, node
        return self.ino_for(parent, name, node), node

    def checkpoint_of(self, ino: int, *, depth: int = 2) -> int | None:
        """The checkpoint id whose `checkpoints/<id>/` directory is inode `ino` or holds it,
        at least `depth` names down from `.sls/` (2: the directory itself; 3: below it)."""
        path = self._paths.get(ino, ())
        if len(path) >= depth and path[0] == "checkpoints" and path[1].isdigit():
            return int(path[1])
        return None

    def mode_size(self, node: VNode) -> tuple[int, int]:
        private = node.owner is not None
        if isinstance(node, VFile):
            return stat.S_IFREG | (0o400 if private else 0o444), len(node.content())
        if isinstance(node, VLink):
            return stat.S_IFLNK | 0o777, len(node.target)
        return stat.S_IFDIR | (0o500 if private else 0o555), 0


class ViewTable:
    """Index <-> view, keyed so that the same tree always gets the same index."""

    def __init__(self, store, main: Volume, meta: MetaView) -> None:
        self.store = store
        self.block_cache = main.block_cache
        self._views: list = [main, meta]
        main.view_index, meta.view_index = MAIN_VIEW, META_VIEW
        self._index: dict[tuple, int] = {("live", main.name): MAIN_VIEW, ("meta",): META_VIEW}
        # kept apart from _views: every WRITE (has_space) and checkpoint asks for them,
        # and _views grows with each checkpoint or snapshot tree that is browsed
        self._live: list[Volume] = [main]

    def __getitem__(self, index: int):
        try:
            return self._views[index]
        except IndexError:
            raise FUSEError(errno.ESTALE) from None

    def live_volumes(self) -> list[Volume]:
        return list(self._live)

    def _add(self, key: tuple, make) -> int:
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self._views)
            view = make()
            view.view_index = index
            self._views.append(view)
            if isinstance(view, Volume) and not view.readonly:
                self._live.append(view)
        return index

    def live(self, name: str) -> int:
        """The view of a live (writable) volume, e.g. a grafted clone."""
        return self._add(("live", name), lambda: Volume(self.store, self.store.volume(name), name,
                                                        block_cache=self.block_cache))

    def forget_live(self, name: str) -> None:
        """A live volume was dropped: its view stays (for stale kernel inodes) but read-only."""
        index = self._index.pop(("live", name), None)
        if index is not None:
            view = self._views[index]
            view.readonly = True
            self._live.remove(view)

    def graft(self, graft: Graft) -> int:
        """The read-only view of a checkpoint's or snapshot's tree."""
        def make() -> Volume:
            volume = Volume(self.store, self.store.tree(graft.root), graft.volume,
                            readonly=True, block_cache=self.block_cache)
            volume.graft_roots = dict(graft.roots)
            return volume
        return self._add(graft.key, make)

    def commits_of(self, indices: set[int]) -> set[int]:
        """Ids of the checkpoints whose `fs/` trees are the views `indices`."""
        return {key[1] for key, index in self._index.items() if key[0] == "commit" and index in indices}

    def graft_in(self, view: Volume, volume_name: str) -> int:
        """The view behind a grafted-volume entry found inside `view`."""
        if not view.readonly:
            return self.live(volume_name)
        roots = getattr(view, "graft_roots", {})
        root = roots.get("vol/" + volume_name)
        if root is None:
            raise FUSEError(errno.ENOENT)   # a snapshot does not capture nested clones
        return self.graft(Graft(("tree", root), root, volume_name, tuple(sorted(roots.items()))))


__all__ = ["MetaView", "ViewTable", "VDir", "kernel_ino", "split_ino", "MAIN_VIEW", "META_VIEW"]
