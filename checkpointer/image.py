"""Process images as objects in the object store.

What: an image is one COW tree (see docs/FORMAT.md, "Process images"):

    b"meta"                               JSON {"format", "version", "created", "processes": [...]}
    b"pages/" + pid(8, BE) + block(8, BE) the pages of one 256 KiB-aligned block: a 64-bit
                                          bitmap (LE, bit i = page block + i*4096 saved)
                                          then the 16-byte chunk id of each saved page
                                          (refs = those chunks)
    b"blobrefs/" + n(8, BE)               empty; refs = blob chunks beyond the first 255
                                          (the meta record's refs hold the first 255)

Every page is its own chunk, so identical pages (across processes, images and
checkpoints) are stored once. `ImageWriter` builds one while capturing; `StoredImage`
reads one back for restore. Images are named in the store's roots as "img/<name>".
Why: restore reads only what it needs, and GC keeps pages alive through the refs.

An incremental image starts as an O(1) copy of its parent's tree and patches only the
blocks whose pages changed, so it is a complete image that shares everything else.
Simplifications: zero pages are stored like any other page (they dedup to one chunk).
Restore reads each distinct page once while the first 16 MiB of pages read fit a cache
(repeated pages: zeros, a forked tree's shared memory); beyond that, every page is a
store read (~35-45 us each: the store's per-chunk cost is what bounds restore speed).
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
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # 2: no inotify/sysv_shm; 1: no socket/fifo files, no posix_timers
ROOT_PREFIX = "img/"
_META = b"meta"
_PAGES = b"pages/"
_CID = 16
PAGE_CACHE_PAGES = 4096  # 16 MiB of pages kept by a StoredImage for pages that repeat
PAGES_PER_BLOCK = 64  # entries of at most 1 KiB, well inside a tree leaf (and its 255-refs limit)
BLOCK = PAGES_PER_BLOCK * PAGE_SIZE
MAX_REFS = 255
BLOB_PIECE = 1 << 20
_BLOB_REFS = b"blobrefs/"
_BLOB_REFS_END = b"blobrefs0"
_PAGES_END = b"pages0"


def _block_key(pid: int, block: int) -> bytes:
    return _PAGES + struct.pack(">QQ", pid, block)


def _decode_block(value: bytes) -> dict[int, bytes]:
    """page index in the block -> chunk id."""
    bitmap = struct.unpack_from("<Q", value)[0]
    pages, offset = {}, 8
    for index in range(PAGES_PER_BLOCK):
        if bitmap >> index & 1:
            pages[index] = value[offset:offset + _CID]
            offset += _CID
    return pages


def _encode_block(pages: dict[int, bytes]) -> tuple[bytes, list[bytes]]:
    order = sorted(pages)
    bitmap = sum(1 << i for i in order)
    ids = [pages[i] for i in order]
    return struct.pack("<Q", bitmap) + b"".join(ids), sorted(set(ids))


class ImageWriter:
    """Builds an image tree: from scratch, or (incremental) as a copy of a parent image
    whose page blocks are patched; only changed blocks and new pages are written."""

    def __init__(self, store: Store, parent: bytes | None = None):
        self.store = store
        self.tree = store.tree(parent)
        self.pages = 0  # pages written by this image
        self._blobs: set[ChunkId] = set()
        self._blocks: dict[tuple[int, int], dict[int, bytes]] = {}  # changed blocks, by (pid, block)

    def add_blob(self, data: bytes) -> list[str]:
        """Store bytes named by the metadata (pipe contents, unlinked files): chunk ids in hex."""
        ids = [self.store.put(data[i:i + BLOB_PIECE]) for i in range(0, len(data), BLOB_PIECE)]
        self._blobs.update(ids)
        return [cid.hex() for cid in ids]

    def _block(self, pid: int, block: int) -> dict[int, bytes]:
        found = self._blocks.get((pid, block))
        if found is None:
            raw = self.tree.get(_block_key(pid, block))
            found = self._blocks[(pid, block)] = _decode_block(raw) if raw else {}
        return found

    def add_pages(self, pid: int, addr: int, data: bytes) -> None:
        """Whole pages starting at addr (the capture's sink)."""
        for offset in range(0, len(data), PAGE_SIZE):
            page = addr + offset
            self._block(pid, page - page % BLOCK)[(page % BLOCK) // PAGE_SIZE] = \
                self.store.put(data[offset:offset + PAGE_SIZE])
        self.pages += len(data) // PAGE_SIZE

    def _existing_blocks(self, pid: int, start: int = 0, end: int | None = None) -> list[int]:
        """Blocks of pid overlapping [start, end) that hold pages (in the parent or added now)."""
        first = start - start % BLOCK
        stop = _block_key(pid, end) if end is not None else _block_key(pid + 1, 0)
        keys = {struct.unpack(">Q", k[-8:])[0] for k, _ in self.tree.items(_block_key(pid, first), stop)}
        keys |= {b for (p, b) in self._blocks if p == pid and b >= first and (end is None or b < end)}
        return sorted(keys)

    def clear(self, pid: int, start: int, end: int) -> None:
        """Forget the pages of [start, end) (a mapping that changed or went away)."""
        for block in self._existing_blocks(pid, start, end):
            pages = self._block(pid, block)
            for index in [i for i in pages if start <= block + i * PAGE_SIZE < end]:
                del pages[index]

    def finish(self, processes: list[dict], files: list[dict]) -> ChunkId:
        live = {p["pid"] for p in processes if not p.get("zombie")}
        for key, _ in list(self.tree.items(_PAGES, _PAGES_END)):
            if struct.unpack(">Q", key[len(_PAGES):len(_PAGES) + 8])[0] not in live:
                self.tree.delete(key)
        for (pid, block), pages in self._blocks.items():
            if pid not in live:
                continue
            if pages:
                value, refs = _encode_block(pages)
                self.tree.put(_block_key(pid, block), value, refs=refs)
            else:
                self.tree.delete(_block_key(pid, block))
        for key, _ in list(self.tree.items(_BLOB_REFS, _BLOB_REFS_END)):
            self.tree.delete(key)
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
        if meta.get("version") not in READABLE_VERSIONS:
            raise CheckpointError(f"process image version {meta.get('version')} is not supported by this "
                                  f"slsfs (it reads versions {READABLE_VERSIONS}); upgrade slsfs")
        self.meta = meta
        self.processes: list[dict] = meta["processes"]
        self.files: list[dict] = meta["files"]
        self._pages: dict[bytes, bytes] = {}  # chunk id -> page, the first PAGE_CACHE_PAGES read

    def read_blob(self, ids: list[str]) -> bytes:
        return b"".join(self.store.get(ChunkId(bytes.fromhex(cid))) for cid in ids)

    def page_runs(self, pid: int, outside: list[tuple[int, int]] = ()) -> Iterator[tuple[int, bytes]]:
        """(address, bytes) runs of consecutive saved pages of one process, leaving out
        (without reading them) the pages inside the [start, end) ranges of `outside`."""
        for key, value in self._blocks_between(pid, sorted(outside)):
            block = struct.unpack(">Q", key[-8:])[0]
            skip = [(start, end) for start, end in outside if start < block + BLOCK and block < end]
            if any(start <= block and block + BLOCK <= end for start, end in skip):
                continue
            run_start, run = None, []
            for index, cid in sorted(_decode_block(value).items()):
                addr = block + index * PAGE_SIZE
                if any(start <= addr < end for start, end in skip):
                    continue
                if run and addr != run_start + len(run) * PAGE_SIZE:
                    yield run_start, b"".join(run)
                    run = []
                if not run:
                    run_start = addr
                run.append(self._page(cid))
            if run:
                yield run_start, b"".join(run)

    def _blocks_between(self, pid: int, outside: list[tuple[int, int]]) -> Iterator[tuple[bytes, bytes]]:
        """The page blocks of pid that hold pages outside the sorted ranges (the blocks at
        their edges included), without walking the tree inside them."""
        low, last = 0, b""
        for start, end in outside + [(1 << 64, 1 << 64)]:
            if low < start:
                for key, value in self.tree.items(max(_block_key(pid, low - low % BLOCK), last),
                                                  _block_key(pid, start) if start < 1 << 64
                                                  else _block_key(pid + 1, 0)):
                    if key != last:  # a block at the edge of two ranges comes once
                        last = key
                        yield key, value
            low = max(low, end)

    def _page(self, cid: bytes) -> bytes:
        """A page by chunk id; a page that repeats (zero pages, memory a forked tree
        shares, repeated content) is read from the store once."""
        data = self._pages.get(cid)
        if data is None:
            data = self.store.get(cid)
            if len(self._pages) < PAGE_CACHE_PAGES:
                self._pages[cid] = data
        return data

    def page_count(self) -> int:
        return sum(bin(struct.unpack_from("<Q", v)[0]).count("1") for _, v in self.tree.items(_PAGES, _PAGES_END))


def image_root_name(name: str) -> str:
    if not name or "/" in name:
        raise CheckpointError(f"invalid image name {name!r}: use a non-empty name without '/'")
    return ROOT_PREFIX + name


def images(store: Store) -> dict[str, ChunkId]:
    """Image name -> root, as of the store's working state."""
    return {n[len(ROOT_PREFIX):]: r for n, r in store.roots().items() if n.startswith(ROOT_PREFIX)}
