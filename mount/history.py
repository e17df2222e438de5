"""The read-only `.sls/` tree: checkpoints, snapshots, names, `latest` and `at/<time>`.

    .sls/checkpoints/<id>/fs/         the volume as of checkpoint <id>
    .sls/checkpoints/<id>/info.json   id, parent, time, label, roots
    .sls/checkpoints/<id>/<ext>/      one per registered extension (issue 5 adds "procs")
    .sls/snapshots/<name>/            a snapshot taken with `sls snapshot`
    .sls/names/<name>                 symlink to checkpoints/<id> of a named checkpoint
                                      (`sls checkpoint --name`, as ZFS's .zfs/snapshot/<name>)
    .sls/latest                       symlink to checkpoints/<newest id>
    .sls/at/<ISO-8601 time>           symlink to the newest checkpoint at or before that time

Nodes are built on demand from the store every time they are looked up or listed, so
new checkpoints appear at once. A node is a `VDir`, a `VFile`, a `VLink` or a
`Graft`: a Graft is the root of a read-only volume view (a checkpoint's or a
snapshot's tree), which the FUSE layer serves with a read-only `mount.volume.Volume`.

Extension hook (for the persistence-group daemon): `HistoryTree.extensions[name] =
provider`, where `provider(commit) -> VNode | None` returns the directory shown as
`checkpoints/<id>/<name>/` (None = not there for that checkpoint).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

SNAPSHOT_PREFIX = "snap/"
VOLUME_PREFIX = "vol/"


class VNode:
    """A node of a virtual tree. Directories override `lookup`/`children`.

    `owner` = (uid, gid) makes a node private to that user (files 0400, directories
    0500), for what holds secrets such as process memory; None: world-readable, root's."""

    owner: tuple[int, int] | None = None

    def lookup(self, name: str) -> "VNode | None":
        return None

    def children(self) -> Iterable[tuple[str, "VNode"]]:
        return ()


@dataclass
class VFile(VNode):
    content: Callable[[], bytes]
    owner: tuple[int, int] | None = None


@dataclass
class VLink(VNode):
    target: str


@dataclass(frozen=True)
class Graft(VNode):
    """The root of a read-only volume tree: `key` names the view, `root` is the tree root id."""
    key: tuple
    root: bytes
    volume: str
    roots: tuple = ()          # (name, root id) of the other volumes as of the same instant


class VDir(VNode):
    """A directory given by a function listing its children (small directories)."""

    def __init__(self, listing: Callable[[], dict[str, VNode]],
                 owner: tuple[int, int] | None = None) -> None:
        self._listing = listing
        self.owner = owner

    def lookup(self, name: str) -> VNode | None:
        return self._listing().get(name)

    def children(self) -> Iterable[tuple[str, VNode]]:
        return sorted(self._listing().items())


class _CheckpointsDir(VNode):
    def __init__(self, history: "HistoryTree") -> None:
        self.history = history

    def lookup(self, name: str) -> VNode | None:
        if not name.isdigit():
            return None
        try:
            commit = self.history.store.resolve(int(name))
        except Exception:        # NotFound, or a retention-thinned id
            return None
        return self.history.commit_dir(commit)

    def children(self) -> Iterable[tuple[str, VNode]]:
        for commit in reversed(self.history.store.log()):
            yield str(commit.id), self.history.commit_dir(commit)


class _AtDir(VNode):
    def __init__(self, history: "HistoryTree") -> None:
        self.history = history

    def lookup(self, name: str) -> VNode | None:
        try:
            datetime.fromisoformat(name)
            commit = self.history.store.resolve(name)
        except Exception:
            return None
        return VLink(f"../checkpoints/{commit.id}")


class HistoryTree:
    """Builds the `.sls` nodes of one mount (its volume is `volume`)."""

    def __init__(self, store, volume: str) -> None:
        self.store = store
        self.volume = volume
        self.extensions: dict[str, Callable[[object], VNode | None]] = {}
        self.root = VDir(self._root_listing)

    def _root_listing(self) -> dict[str, VNode]:
        listing: dict[str, VNode] = {
            "checkpoints": _CheckpointsDir(self),
            "snapshots": VDir(self._snapshots),
            "at": _AtDir(self),
            "names": VDir(lambda: {name: VLink(f"../checkpoints/{commit_id}")
                                   for name, commit_id in self.store.tags().items()}),
        }
        log = self.store.log()
        if log:
            listing["latest"] = VLink(f"checkpoints/{log[0].id}")
        return listing

    def _snapshots(self) -> dict[str, VNode]:
        return {name[len(SNAPSHOT_PREFIX):]: Graft(("snapshot", name, root), root, name)
                for name, root in self.store.roots().items() if name.startswith(SNAPSHOT_PREFIX)}

    def commit_dir(self, commit) -> VNode:
        def listing() -> dict[str, VNode]:
            items: dict[str, VNode] = {"info.json": VFile(lambda: info_json(commit))}
            root = commit.roots.get(VOLUME_PREFIX + self.volume)
            if root is not None:
                items["fs"] = Graft(("commit", commit.id, self.volume), root, self.volume,
                                    tuple(sorted(commit.roots.items())))
            for name, provider in self.extensions.items():
                node = provider(commit)
                if node is not None:
                    items[name] = node
            return items
        return VDir(listing)


def info_json(commit) -> bytes:
    doc = {
        "id": commit.id,
        "parent": commit.parent,
        "time": commit.time,
        "time_iso": datetime.fromtimestamp(commit.time).astimezone().isoformat(),
        "label": commit.label,
        "roots": {name: bytes(root).hex() for name, root in sorted(commit.roots.items())},
    }
    return (json.dumps(doc, indent=2) + "\n").encode()
