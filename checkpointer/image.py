"""Process images as objects in the object store.

What: an image is one COW tree (see docs/FORMAT.md, "Process images"):

    b"meta"                               JSON {"format", "version", "created", "processes": [...]}
    b"pages/" + pid(8, BE) + block(8, BE) the pages of one 256 KiB-aligned block: a 64-bit
                                          bitmap (LE, bit i = page block + i*4096 saved),
                                          then, only if a chunk repeats in the block, a u8
                                          per saved page: its chunk's place in the refs
                                          (refs = the block's chunks, each once, in address
                                          order: without the u8s, one per saved page)
    b"blobrefs/" + n(8, BE)               empty; refs = blob chunks beyond the first 255
                                          (the meta record's refs hold the first 255)
    b"metapieces/" + n(8, BE)             metadata over META_PIECE bytes, in pieces; "meta"
                                          then holds {"format", "version", "pieces": N}

Every page is its own chunk, so identical pages (across processes, images and
checkpoints) are stored once. `ImageWriter` builds one while capturing; `StoredImage`
reads one back for restore. Images are named in the store's roots as "img/<name>".
Why: restore reads only what it needs, and GC keeps pages alive through the refs.

An incremental image starts as an O(1) copy of its parent's tree and patches only the
blocks whose pages changed, so it is a complete image that shares everything else (a
block whose pages were all written again as they were, the same chunks, is left as it is:
a write-tracked page counts as written whatever it holds; at 100 checkpoints a second of
a SQLite loop a fifth of the blocks written were the parent's).
Each `finish()` keeps its page table decoded in memory (the blocks it wrote or read,
for the last CACHED_IMAGES images, up to CACHED_BLOCKS_MAX blocks each), and the next
ImageWriter on that image takes it over: a checkpoint of a process that writes all over
its memory (Redis) patches hundreds of blocks, and decoding each from the tree cost more
than storing its new pages. Safe because an image root names immutable content: the
decoded blocks of root R are R's blocks in any store with R.
Simplifications: zero pages are stored like any other page (they dedup to one chunk;
restore never reads it, and leaves it out where the memory is mapped afresh). Restore
reads pages in batches of BATCH_PAGES through Store.get_many (pack order, one pread per
span, ~3-5 us a page); in an image of several processes each distinct page once while the
first 16 MiB of pages read fit a cache (repeated pages: a forked tree's shared memory);
beyond that a repeat is read again.
"""
from __future__ import annotations

import bisect
import json
import struct
import time
from typing import Generator, Iterable, Iterator, Sequence

from objectstore import DATA, ChunkId, Store
from objectstore.chunks import chunk_id
from objectstore.tree import LARGE_NODE, Entry, run_steps

from . import heap
from .errors import CheckpointError
from .kernel import PAGE_SIZE
from .metajson import MetaEncoder

FORMAT = "slsfs-process-image"
VERSION = 30
READABLE_VERSIONS = tuple(range(1, VERSION + 1))   # what each version added: docs/FORMAT.md
ROOT_PREFIX = "img/"
_META = b"meta"
_PAGES = b"pages/"
_CID = 16
PAGE_CACHE_PAGES = 4096  # 16 MiB of pages kept by a StoredImage for pages that repeat
BATCH_PAGES = 256  # pages read from the store at once (1 MiB: bigger batches cost more in page faults than they save)
RUN_PAGES = 256  # page_runs yields runs of at most 1 MiB
ZERO_PAGE = bytes(PAGE_SIZE)
PAGES_PER_BLOCK = 64  # entries of at most 1 KiB, well inside a tree leaf (and its 255-refs limit)
BLOCK = PAGES_PER_BLOCK * PAGE_SIZE
MAX_REFS = 255
# The leaves of an image's tree split past this (a tree's default: 4 KiB). A block's entry was
# ~2 KiB until version 28 (its ids twice: value and refs; ~1 KiB since), so a 4 KiB leaf held
# one, and a checkpoint of a process that writes all over its memory (Redis: ~2,000 pages of a 100 MiB dataset, in most
# of its 400 blocks) wrote a node per block. A 25,600-page image, 2,000 random pages a
# checkpoint, both sizes in turns in one process (load 3.2-3.3, medians of 14): finish()
# 26.1 -> 20.1, 23.4 -> 17.7, 23.5 -> 18.2 ms. Sparse writers pay in bytes: 20 pages a
# checkpoint wrote 31 KiB of nodes, now 82 (as fast). Below the node cache's LARGE_NODE (it
# keeps only a few nodes larger than that: 32 KiB leaves were as slow as 4 KiB ones).
IMAGE_LEAF_BYTES = LARGE_NODE - 1024
CACHED_IMAGES = 4            # decoded page tables kept (one per group checkpointing in a daemon)
CACHED_BLOCKS_MAX = 32768    # ... of at most 8 GiB of pages each (about 5 KiB of memory a block)
Decoded = dict[int, dict[int, dict[int, bytes]]]   # pid -> block address -> page index -> chunk id
_decoded: dict[tuple[str, bytes], Decoded] = {}    # (store path, image root) -> its decoded blocks
_encoders: dict[tuple[str, bytes], MetaEncoder] = {}  # (store path, image root) -> the encoder of its metadata
BLOB_PIECE = 1 << 20
# Metadata longer than this is stored in pieces (version 18): one tree value is one
# chunk, and a chunk holds at most 16 MiB (objectstore.pack.MAX_RECORD); thousands of
# threads (stress-ng --pthread) made 22 MB of metadata, an image no restore could read.
META_PIECE = 1 << 20
_META_PIECES = b"metapieces/"
_META_PIECES_END = b"metapieces0"
_BLOB_REFS = b"blobrefs/"
_BLOB_REFS_END = b"blobrefs0"
_PAGES_END = b"pages0"


def _block_key(pid: int, block: int) -> bytes:
    return _PAGES + struct.pack(">QQ", pid, block)


def block_ids(value: bytes, refs: Sequence[bytes]) -> list[bytes]:
    """The chunk id of each saved page of a stored page block, in address order, whatever
    the version that wrote the block (an incremental image keeps its parent's unchanged
    blocks as they were written): the encoding is told by the value's length (FORMAT.md,
    "Process images"). CheckpointError if it is none of them."""
    count = bin(struct.unpack_from("<Q", value)[0]).count("1")
    if len(value) == 8 and len(refs) == count:              # version 28: a chunk a page
        return list(refs)
    if len(value) == 8 + count and count:                   # version 28: a chunk repeats
        try:
            return list(map(refs.__getitem__, value[8:]))
        except IndexError:
            pass
    elif len(value) == 8 + _CID * count:                    # versions 1-27: the ids in the value
        return [value[o:o + _CID] for o in range(8, 8 + _CID * count, _CID)]
    raise CheckpointError(f"a page block of {count} pages is malformed ({len(value)} bytes, {len(refs)} refs): "
                          "the store is damaged; run `sls fsck`")


def _decode_block(value: bytes, refs: Sequence[bytes]) -> dict[int, bytes]:
    """page index in the block -> chunk id (plain bytes: Tree.put takes them as they are)."""
    bitmap = struct.unpack_from("<Q", value)[0]
    return dict(zip([i for i in range(PAGES_PER_BLOCK) if bitmap >> i & 1], block_ids(value, refs)))


_FULL = (struct.pack("<Q", (1 << PAGES_PER_BLOCK) - 1), range(PAGES_PER_BLOCK))   # every page saved
_BITS = tuple(1 << i for i in range(PAGES_PER_BLOCK))


def _encode_block(pages: dict[int, bytes]) -> tuple[bytes, list[bytes]]:
    """The value of a page block and its refs (version 28): the refs name each chunk once,
    in address order; the value is the bitmap, followed by a chunk's place in the refs
    for each page only when a chunk repeats (zero pages). Each id is stored once: until
    version 27 the value held them all again, a block's entry was twice as long, and
    every changed block of a checkpoint was written, hashed and cached twice over."""
    if len(pages) == PAGES_PER_BLOCK:       # the usual block of a busy heap: no sort, no bitmap sum
        head, order = _FULL
    else:
        order = sorted(pages)
        head = struct.pack("<Q", sum(map(_BITS.__getitem__, order)))
    ids = list(map(pages.__getitem__, order))
    if len(set(ids)) == len(ids):           # (a third of what dict.fromkeys costs: 3.4 vs 9.9 us)
        return head, ids
    refs = list(dict.fromkeys(ids))
    place = {cid: n for n, cid in enumerate(refs)}
    return head + bytes(map(place.__getitem__, ids)), refs


def _blob_pieces(data: bytes) -> list[bytes]:
    return [data[i:i + BLOB_PIECE] for i in range(0, len(data), BLOB_PIECE)]


class ImageWriter:
    """Builds an image tree: from scratch, or (incremental) as a copy of a parent image
    whose page blocks are patched; only changed blocks and new pages are written."""

    def __init__(self, store: Store, parent: bytes | None = None):
        self.store = store
        self.tree = store.tree(parent, leaf_bytes=IMAGE_LEAF_BYTES)
        self.pages = 0  # pages written by this image
        self._blobs: set[ChunkId] = set()
        self._blocks: dict[tuple[int, int], dict[int, bytes]] = {}  # blocks read or patched, by (pid, block)
        self._stored: dict[tuple[int, int], dict[int, bytes]] = {}  # ... each as the tree holds it
        # the parent's blocks decoded by the writer that made it (taken over: a writer that
        # fails never gives them back, so a half-patched block is never used again)
        self._decoded: Decoded = _decoded.pop((str(store.path), bytes(parent)), {}) if parent else {}
        # ... and the encoder of its metadata record, which re-encodes only what changed
        self._encoder = (_encoders.pop((str(store.path), bytes(parent)), None) if parent else None) or MetaEncoder()

    def add_blob(self, data: bytes) -> list[str]:
        """Store bytes named by the metadata (pipe contents, unlinked files): chunk ids in hex."""
        ids = [self.store.put(piece) for piece in _blob_pieces(data)]
        self._blobs.update(ids)
        return [cid.hex() for cid in ids]

    def keep_blobs(self, ids: list[str]) -> None:
        """Blobs stored before (chunk ids in hex, from an earlier image) that this image
        names too: it keeps them alive."""
        self._blobs.update(ChunkId(bytes.fromhex(i)) for i in ids)

    def blob_ids(self, data: bytes) -> list[str]:
        """What add_blob(data) returns, without storing anything: callable from any thread
        (a capture names a blob while the target is frozen, and stores it after the thaw)."""
        return [self.store.id_of(piece).hex() for piece in _blob_pieces(data)]

    def _block(self, pid: int, block: int) -> dict[int, bytes]:
        found = self._blocks.get((pid, block))
        if found is None:
            found = self._decoded.get(pid, {}).get(block)
            if found is None:
                entry = self.tree.get_entry(_block_key(pid, block))
                found = _decode_block(*entry) if entry else {}
            self._stored[(pid, block)] = dict(found)
            self._blocks[(pid, block)] = found
        return found

    def add_pages(self, pid: int, addr: int, data: bytes) -> None:
        """Whole pages starting at addr (the capture's sink): add_runs of one run."""
        self.add_runs(((pid, addr, data),))

    def add_runs(self, runs: Iterable[tuple[int, int, bytes]]) -> None:
        """Runs of whole pages (pid, address, data), stored by one put_many over all their
        pages (no copy of each page; most runs of an incremental checkpoint are one page,
        and one call for all of them saves the store's setup per call), then entered in
        the page table a block at a time, in order (a later write of an address wins)."""
        runs = list(runs)
        pages: list[bytes] = []
        for _, _, data in runs:
            if len(data) == PAGE_SIZE:
                pages.append(data)
            else:
                view = memoryview(data)
                pages += [view[offset:offset + PAGE_SIZE] for offset in range(0, len(data), PAGE_SIZE)]
        # lz4 by the GC, if they last; read again only by a restore (or the GC)
        ids = self.store.put_many(pages, compress_later=True, rarely_read=True) if pages else []
        self.pages += len(ids)
        done = 0
        for pid, addr, data in runs:
            end = done + len(data) // PAGE_SIZE
            if end == done + 1:
                self._block(pid, addr - addr % BLOCK)[(addr % BLOCK) // PAGE_SIZE] = ids[done]
                done = end
            while done < end:
                block = addr - addr % BLOCK
                first = (addr - block) // PAGE_SIZE
                take = min(PAGES_PER_BLOCK - first, end - done)
                self._block(pid, block).update(zip(range(first, first + take), ids[done:done + take]))
                done += take
                addr = block + BLOCK

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

    def _pids_with_pages(self) -> list[int]:
        """The pids the tree holds page blocks of: one short descent per pid, not a walk
        over every block (an incremental image of a large process has thousands)."""
        pids, start = [], _PAGES
        while (first := next(self.tree.items(start, _PAGES_END), None)) is not None:
            pid = struct.unpack(">Q", first[0][len(_PAGES):len(_PAGES) + 8])[0]
            pids.append(pid)
            start = _block_key(pid + 1, 0)
        return pids

    def finish(self, processes: list[dict], files: list[dict]) -> ChunkId:
        """The image root: the changed page blocks, the metadata of `processes` and
        `files` and the blobs named are written into the tree, which is flushed."""
        return run_steps(self.finishing(processes, files))

    def finishing(self, processes: list[dict], files: list[dict]) -> Generator[None, None, ChunkId]:
        """finish() in short steps (a page block, the metadata's encoding, a tree node
        written), yielding between them: the group daemon
        runs it in the thread that serves the mount, answering requests between two steps
        (as one call it held them 1.5-2.4 ms at each SQLite checkpoint at load 10). Nothing
        else may use this writer until the end; its return value is finish()'s."""
        live = {p["pid"] for p in processes if not p.get("zombie")}
        for pid in self._pids_with_pages():
            if pid not in live:
                for key, _ in list(self.tree.items(_block_key(pid, 0), _block_key(pid + 1, 0))):
                    self.tree.delete(key)
                yield
        stored = self._stored
        for (pid, block), pages in self._blocks.items():
            if pid not in live or pages == stored[(pid, block)]:   # (pages written again as they were)
                continue
            if pages:
                value, refs = _encode_block(pages)
                self.tree.put(_block_key(pid, block), value, refs=refs)
            else:
                self.tree.delete(_block_key(pid, block))
            yield
        for start, end in ((_BLOB_REFS, _BLOB_REFS_END), (_META_PIECES, _META_PIECES_END)):
            for key, _ in list(self.tree.items(start, end)):
                self.tree.delete(key)
        meta = {"format": FORMAT, "version": VERSION, "created": time.time(), "page_size": PAGE_SIZE,
                "processes": processes, "files": files}
        encoded = self._encoder.encode(meta).encode()      # json.dumps (unsorted: half the time)
        yield
        if len(encoded) > META_PIECE:
            pieces = range(0, len(encoded), META_PIECE)
            for n, at in enumerate(pieces):
                self.tree.put(_META_PIECES + struct.pack(">Q", n), encoded[at:at + META_PIECE])
            encoded = json.dumps({"format": FORMAT, "version": VERSION, "pieces": len(pieces)}).encode()
        blobs = sorted(self._blobs)
        for i in range(0, max(len(blobs), 1), MAX_REFS):  # refs per entry are limited: extra keys
            key = _META if i == 0 else _BLOB_REFS + struct.pack(">Q", i)
            self.tree.put(key, encoded if i == 0 else b"", refs=blobs[i:i + MAX_REFS])
        root = yield from self.tree.flushing()
        self._keep_decoded(root, live)
        _keep(_encoders, (str(self.store.path), bytes(root)), self._encoder)
        heap.after_capture(self.pages * PAGE_SIZE)   # its pages' buffers are free now
        return root

    def _keep_decoded(self, root: ChunkId, live: set[int]) -> None:
        """Hand this image's decoded blocks to the next writer on `root`."""
        decoded = self._decoded
        for (pid, block), pages in self._blocks.items():
            if pages:
                decoded.setdefault(pid, {})[block] = pages
            else:
                decoded.get(pid, {}).pop(block, None)
        for pid in [pid for pid in decoded if pid not in live]:
            del decoded[pid]
        self._blocks, self._stored, self._decoded = {}, {}, {}
        if sum(map(len, decoded.values())) <= CACHED_BLOCKS_MAX:
            _keep(_decoded, (str(self.store.path), bytes(root)), decoded)


def _keep(cache: dict, key: tuple[str, bytes], value: object) -> None:
    """Hand `value` to the next writer on the image `key`, keeping the last CACHED_IMAGES."""
    cache[key] = value
    while len(cache) > CACHED_IMAGES:
        del cache[next(iter(cache))]


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
        if "pieces" in meta:
            meta = self._pieced_meta(meta["pieces"])
        self.meta = meta
        self.processes: list[dict] = meta["processes"]
        self.files: list[dict] = meta["files"]
        self._zero_id = chunk_id(DATA, ZERO_PAGE, store.seed)
        self._pages: dict[bytes, bytes] = {self._zero_id: ZERO_PAGE}  # chunk id -> page (see read_pages)
        self._shared_pages = sum(not p.get("zombie") for p in self.processes) > 1  # may repeat across processes

    def _pieced_meta(self, count: int) -> dict:
        """The metadata stored in `count` pieces (see META_PIECE)."""
        pieces = [self.tree.get(_META_PIECES + struct.pack(">Q", n)) for n in range(count)]
        if None in pieces:
            raise CheckpointError(f"process image {self.root.hex()}: piece {pieces.index(None)} of its "
                                  f"{count} metadata pieces is missing (damaged store? run `sls fsck`)")
        return json.loads(b"".join(pieces))

    def read_blob(self, ids: list[str]) -> bytes:
        return b"".join(self.read_pieces(ids))

    def read_pieces(self, ids: list[str]) -> list[bytes]:
        """The chunks of a blob, each apart (neighbouring records read together)."""
        return self.store.get_many([ChunkId(bytes.fromhex(cid)) for cid in ids])

    def page_runs(self, pid: int, outside: list[tuple[int, int]] = (),
                  skip_zero: bool = False) -> Iterator[tuple[int, bytes]]:
        """(address, bytes) runs of consecutive saved pages of one process (at most
        RUN_PAGES each), leaving out (without reading them) the pages inside the
        [start, end) ranges of `outside`; with `skip_zero`, also the zero pages of its
        private anonymous mappings (restore maps those afresh: they are zero already)."""
        for addr, pages in self.page_vectors(pid, outside, skip_zero):
            yield addr, b"".join(pages)

    def page_vectors(self, pid: int, outside: list[tuple[int, int]] = (),
                     skip_zero: bool = False) -> Iterator[tuple[int, list[bytes]]]:
        """page_runs, each run as its list of pages (restore writes them with one
        pwritev or UFFDIO_COPY: no joined copy). Pages are read from the store
        BATCH_PAGES at a time, in pack order; the block values are decoded a block at a
        time (no per-page generator: restore's reading is Python-bound)."""
        fresh = self._fresh_ranges(pid) if skip_zero else []
        outside, zero = sorted(outside), self._zero_id
        addrs: list[int] = []
        cids: list[bytes] = []
        for key, entry in self._blocks_between(pid, outside):
            block = struct.unpack(">Q", key[-8:])[0]
            bitmap = struct.unpack_from("<Q", entry.value)[0]
            block_addrs = [block + i * PAGE_SIZE for i in range(PAGES_PER_BLOCK) if bitmap >> i & 1]
            block_cids = block_ids(*entry)
            skip = [(start, end) for start, end in outside if start < block + BLOCK and block < end]
            if skip:
                if any(start <= block and block + BLOCK <= end for start, end in skip):
                    continue
                kept = [(a, c) for a, c in zip(block_addrs, block_cids) if not _inside(skip, a)]
                block_addrs, block_cids = [a for a, _ in kept], [c for _, c in kept]
            if fresh and zero in block_cids:
                if _within(fresh, block, block + BLOCK):
                    kept = [(a, c) for a, c in zip(block_addrs, block_cids) if c != zero]
                else:
                    kept = [(a, c) for a, c in zip(block_addrs, block_cids) if c != zero or not _inside(fresh, a)]
                block_addrs, block_cids = [a for a, _ in kept], [c for _, c in kept]
            addrs += block_addrs
            cids += block_cids
            if len(addrs) >= BATCH_PAGES:
                yield from self._runs(addrs, cids)
                addrs, cids = [], []
        yield from self._runs(addrs, cids)

    def _fresh_ranges(self, pid: int) -> list[tuple[int, int]]:
        meta = next((p for p in self.processes if p["pid"] == pid), {"vmas": []})
        return sorted((v["start"], v["end"]) for v in meta["vmas"] if v["kind"] == "anon")

    def _runs(self, addrs: list[int], cids: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
        """The pages (addresses in order, their chunk ids) read, in runs of consecutive ones."""
        datas = self.read_pages(cids)
        first = 0
        for i in range(1, len(addrs) + 1):
            if i == len(addrs) or addrs[i] != addrs[i - 1] + PAGE_SIZE or i - first == RUN_PAGES:
                yield addrs[first], datas[first:i]
                first = i

    def read_pages(self, cids: list[bytes]) -> list[bytes]:
        """Pages by chunk id, the distinct ones not yet cached read in one batch. In an
        image of several processes a page that repeats (memory a forked tree shares) is
        read once while the first PAGE_CACHE_PAGES fit the cache (a single process's
        pages are not kept: they would only hold memory); the zero page is never read."""
        cache = self._pages
        if not self._shared_pages:  # only the zero page is cached: no bookkeeping per page
            if self._zero_id not in cids:
                return self.store.get_many(cids)
            found = iter(self.store.get_many([cid for cid in cids if cid != self._zero_id]))
            return [ZERO_PAGE if cid == self._zero_id else next(found) for cid in cids]
        missing = list({cid for cid in cids if cid not in cache})
        found = dict(zip(missing, self.store.get_many(missing)))
        for cid in missing[:max(0, PAGE_CACHE_PAGES - len(cache))]:
            cache[cid] = found[cid]
        return [cache.get(cid) or found[cid] for cid in cids]

    def _blocks_between(self, pid: int, outside: list[tuple[int, int]]) -> Iterator[tuple[bytes, Entry]]:
        """The page blocks of pid that hold pages outside the sorted ranges (the blocks at
        their edges included), without walking the tree inside them."""
        low, last = 0, b""
        for start, end in outside + [(1 << 64, 1 << 64)]:
            if low < start:
                for key, entry in self.tree.entries(max(_block_key(pid, low - low % BLOCK), last),
                                                    _block_key(pid, start) if start < 1 << 64
                                                    else _block_key(pid + 1, 0)):
                    if key != last:  # a block at the edge of two ranges comes once
                        last = key
                        yield key, entry
            low = max(low, end)

    def page_count(self) -> int:
        return sum(bin(struct.unpack_from("<Q", v)[0]).count("1") for _, v in self.tree.items(_PAGES, _PAGES_END))

    def holds_pages(self, count: int) -> bool:
        """page_count() >= count, reading only the page blocks it takes to see that (a
        restore's lazy-or-not choice reads ~count/64 blocks, not all of a 2 GiB image's)."""
        for _, value in self.tree.items(_PAGES, _PAGES_END):
            count -= bin(struct.unpack_from("<Q", value)[0]).count("1")
            if count <= 0:
                return True
        return count <= 0


def _within(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Does one of the sorted, disjoint [start, end) ranges hold all of [start, end)?"""
    at = bisect.bisect_right(ranges, (start, 1 << 64)) - 1
    return at >= 0 and end <= ranges[at][1]


def _inside(ranges: list[tuple[int, int]], addr: int) -> bool:
    """Is addr inside one of the sorted, disjoint [start, end) ranges?"""
    at = bisect.bisect_right(ranges, (addr, 1 << 64)) - 1
    return at >= 0 and addr < ranges[at][1]


def image_root_name(name: str) -> str:
    if not name or "/" in name:
        raise CheckpointError(f"invalid image name {name!r}: use a non-empty name without '/'")
    return ROOT_PREFIX + name


def images(store: Store) -> dict[str, ChunkId]:
    """Image name -> root, as of the store's working state."""
    return {n[len(ROOT_PREFIX):]: r for n, r in store.roots().items() if n.startswith(ROOT_PREFIX)}
