"""Process images as objects in the object store.

What: an image is one COW tree (see docs/FORMAT.md, "Process images"):

    b"meta"                               JSON {"format", "version", "created", "processes": [...]}
    b"pages/" + pid(8, BE) + addr(8, BE)  the 16-byte chunk ids of 1..64 consecutive 4 KiB
                                          pages starting at addr (refs = those chunks)
    b"blobrefs/" + n(8, BE)               empty; refs = blob chunks beyond the first 255
                                          (the meta record's refs hold the first 255)

Every page is its own chunk, so identical pages (across processes, images and
checkpoints) are stored once. `ImageWriter` builds one while capturing; `StoredImage`
reads one back for restore. Images are named in the store's roots as "img/<name>".
Why: restore reads only what it needs, and GC keeps pages alive through the refs.

Simplifications: no parent image yet (every image is full); zero pages are stored
like any other page (they dedup to one chunk).
"""
from __future__ import annotations

import json
import struct
import time
from typing import Iterator

from objectstore import ChunkId, Store

from .errors import CheckpointError
from .kernel import PAGE_SIZE

FORMAT = "slsfs-process-image"
VERSION = 1
ROOT_PREFIX = "img/"
_META = b"meta"
_PAGES = b"pages/"
_CID = 16
PAGES_PER_ENTRY = 64  # keeps entries at 1 KiB, well inside a tree leaf (and its 255-refs limit)
MAX_REFS = 255
BLOB_PIECE = 1 << 20
_BLOB_REFS = b"blobrefs/"


def _page_key(pid: int, addr: int) -> bytes:
    return _PAGES + struct.pack(">QQ", pid, addr)


class ImageWriter:
    """Collects pages (the capture's sink) and metadata into a new image tree."""

    def __init__(self, store: Store):
        self.store = store
        self.tree = store.tree()
        self.pages = 0
        self._blobs: set[ChunkId] = set()

    def add_blob(self, data: bytes) -> list[str]:
        """Store bytes named by the metadata (pipe contents, unlinked files): chunk ids in hex."""
        ids = [self.store.put(data[i:i + BLOB_PIECE]) for i in range(0, len(data), BLOB_PIECE)]
        self._blobs.update(ids)
        return [cid.hex() for cid in ids]

    def add_pages(self, pid: int, addr: int, data: bytes) -> None:
        step = PAGES_PER_ENTRY * PAGE_SIZE
        for offset in range(0, len(data), step):
            part = data[offset:offset + step]
            ids = [self.store.put(part[i:i + PAGE_SIZE]) for i in range(0, len(part), PAGE_SIZE)]
            self.tree.put(_page_key(pid, addr + offset), b"".join(ids), refs=sorted(set(ids)))
            self.pages += len(ids)

    def finish(self, processes: list[dict], files: list[dict]) -> ChunkId:
        meta = {"format": FORMAT, "version": VERSION, "created": time.time(), "page_size": PAGE_SIZE,
                "processes": processes, "files": files}
        blobs = sorted(self._blobs)
        for i in range(0, max(len(blobs), 1), MAX_REFS):  # refs per entry are limited: extra keys
            key = _META if i == 0 else _BLOB_REFS + struct.pack(">Q", i)
            value = json.dumps(meta, sort_keys=True).encode() if i == 0 else b""
            self.tree.put(key, value, refs=blobs[i:i + MAX_REFS])
        return self.tree.flush()


class StoredImage:
    """An image read back from the store (implements restore's ImageSource)."""

    def __init__(self, store: Store, root: bytes):
        self.store = store
        self.root = ChunkId(root)
        self.tree = store.tree(root)
        raw = self.tree.get(_META)
        if raw is None:
            raise CheckpointError(f"tree {self.root.hex()} is not a process image (no metadata record)")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"tree {self.root.hex()} is not a process image ({meta.get('format')!r})")
        if meta.get("version") != VERSION:
            raise CheckpointError(f"process image version {meta.get('version')} is not supported by this "
                                  f"slsfs (it reads version {VERSION}); upgrade slsfs")
        self.meta = meta
        self.processes: list[dict] = meta["processes"]
        self.files: list[dict] = meta["files"]

    def read_blob(self, ids: list[str]) -> bytes:
        return b"".join(self.store.get(ChunkId(bytes.fromhex(cid))) for cid in ids)

    def page_runs(self, pid: int) -> Iterator[tuple[int, bytes]]:
        start = _page_key(pid, 0)
        end = _page_key(pid + 1, 0)
        for key, value in self.tree.items(start, end):
            addr = struct.unpack(">Q", key[-8:])[0]
            ids = [value[i:i + _CID] for i in range(0, len(value), _CID)]
            yield addr, b"".join(self.store.get(cid) for cid in ids)

    def page_count(self) -> int:
        return sum(len(v) // _CID for _, v in self.tree.items(_PAGES, _PAGES[:-1] + b"0"))


def image_root_name(name: str) -> str:
    if not name or "/" in name:
        raise CheckpointError(f"invalid image name {name!r}: use a non-empty name without '/'")
    return ROOT_PREFIX + name


def images(store: Store) -> dict[str, ChunkId]:
    """Image name -> root, as of the store's working state."""
    return {n[len(ROOT_PREFIX):]: r for n, r in store.roots().items() if n.startswith(ROOT_PREFIX)}
