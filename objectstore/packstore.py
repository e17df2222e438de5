"""PackStore: chunks and the store's own records in append-only pack files on disk.

Design notes:
- One *active* pack takes appends; records are buffered in memory and written with
  one write() at `sync()` (or when the buffer grows large), then fdatasync'd (the data
  and the file size that reaches it; fsync would also write the times back: ~15% more
  per sync on this disk): many commits can share one sync (group commit). A sync can be split (begin_sync, then
  PendingSync.wait in any thread, then end_sync) so that the owner's thread goes on
  (serving a mount) during the fsync; what it appends meanwhile waits for the next sync.
- When the active pack passes `pack_limit` it is *sealed*: its index is written
  beside it (tmp + fsync + rename) and the next pack is started.
- The whole index lives in RAM: a dict from chunk id to one packed int (pack number,
  offset, stored length, kind). Simplification: RAM grows with the number of chunks
  (about 150 bytes each). It is built from the packs' index entries when it is first
  needed whole (many chunks stored at once; more read than look-ups pay for:
  _looked_up_cheaper), not when the store is opened (the store's own records are found
  at once): building it costs ~1.4 us per chunk of the store (a 2 GiB process image:
  524,000 pages, 740 ms). Until then a chunk is looked up in the packs' entries
  themselves, newest pack first (_locate: a binary search of a sealed pack's sorted
  index, a search of the bytes of the active pack's), so a command that reads only the
  history or a few chunks (an image's tree: a lazy restore runs its process before it
  reads its pages) does not pay for it, and one that will want every chunk builds it a
  step at a time (index_some) between its other work (a mount, while it serves; a
  group daemon once its restore is done). A put looks its chunk up the same way (a
  daemon's restore names a checkpoint's tree again: a group of 1 GiB ran again 272-347
  ms after `sls restore`, 426-624 when that built the index of its 260,000 chunks
  first); put_many and the collector build it whole.
- `get_many` reads many chunks in pack order, one pread per span of nearby records;
  `put_many` stores many (a checkpoint's pages) with one hashing pass, one dedup pass
  and one append loop, writing exactly the records `put` would, one at a time.
- Chunks are lz4-compressed when that saves a sixteenth or more; after one that does
  not, the next is probed on its first 512 bytes before lz4 runs on all of it (runs of
  incompressible pages cost a small lz4 call each; see _append_records). Measured on a
  Redis checkpoint's pages (2026-11, this 2-core VM; they compress to 32%): lz4 costs
  7-9 us a page, most of put_many's ~13; its acceleration saves little on such pages (it
  only skips faster where nothing matches; 2026-12-01, 20,000 pages of a 10 Hz group,
  interleaved: 1-12 at most 0.7 us a page for 0-30% more bytes, 16 1.5 us for 50% more,
  and in the group daemon at 16 no change in CPU per page, 3 bench runs each), and liblz4
  through ctypes costs more than python-lz4 (6.3 vs 5.8 us a page; the state-reusing
  call is not exported). So a checkpoint's pages may be stored as they are
  (`put_many(..., compress_later=True)`, in version 3 packs: FLAG_DEFERRED) and
  compressed when the garbage collector copies them out of their sealed pack, which it
  does for every pack holding such records (`pending_compression`): at 100 checkpoints a
  second most pages are superseded by then, and lz4 runs only on those that survive.
  The cost: those pages take their full size on disk (~3x a Redis page's lz4) until the
  collection after their pack was sealed (a server collects once the packs have doubled,
  such pages counted at a third: Store.gc_due), within a budget (pending_budget_allows):
  PENDING_CAP or the live bytes, and a quarter of the room they and the free space make;
  past it they are compressed at once, and a collection is due. Measured (2026-12-01, Redis under
  redis-benchmark at 100 Hz for 30 s): 8,611 of 44,861 such pages were live when
  collected, so lz4 ran on 19% of them.
- Records put as *rarely read* (put_many(..., rarely_read=True): a checkpoint's memory
  pages, most superseded before anything reads them, the rest read by a restore or the
  GC) leave the page cache once a sync made them durable (POSIX_FADV_DONTNEED over the
  whole pages they fill; PendingSync.wait). Kept, they would grow the page cache by all
  a group stores (~70 MB/s for a 100 MiB Redis at 10 Hz) and crowd out the applications'
  files; and in a VM whose balloon reports free pages to its host (virtio_balloon's free
  page reporting, as on this machine) every page the cache grows into is one the host
  faults in at its first write: ~12 us per 4 KiB here (a buffered write of new data ran at
  330 MB/s, the same write into just-freed pages at 3.6 GB/s), 44% of the group daemon's
  samples under perf. Let go of, the same few pages are reused. Measured (2026-12-03,
  bench/groups.py --redis-only, 100 MiB Redis, 2 runs before, 3 after, in turns): daemon
  CPU per checkpoint at 10 Hz 77.6/62.2 -> 51.3/52.4/51.4 ms (its system part 44/42 ->
  29/27/29%), at 100 Hz 45.5/53.5 -> 28.7/32.3/32.7 ms, and 21.5/18.0 -> 34.2/30.6/29.8
  checkpoints a second reached of the 100 asked for; freeze-to-durable at 10 Hz
  90/85 -> 72/72/71 ms; the restores moved less than their noise. Other records stay
  cached: a mount reads its tree nodes and file data back (a lookup, a partial write of a
  chunk), and letting go of every durable record cost SQLite in a mount half its rows a
  second or more (bench/fs.py --quick: 259 -> 77-120) and a diff of two checkpoints 12 ->
  57 ms. A partial page is never let go of: the next append into it would read it back.
- The active pack's *prefix index* (`pack-N.pidx`: segments of sealed-index entries)
  names records already made durable; after a sync that leaves prefix_index_step records
  or more unnamed, a segment naming them is appended (no fsync: a lost or torn one only
  means a longer scan), so that opening scans only the few records after it. The active
  pack's records are kept as those index entries too (no object per record: opening a
  store whose active pack held 500k small records built one each, ~60% of the open):
  an appended record's entry is encoded as it is appended, and the records a scan found
  after the prefix index are encoded at the first append (index_ahead).
- Opening after a crash: sealed packs are read through their index (rebuilt by a
  scan if missing or damaged); the active pack is scanned after its prefix index.
  Damage after the last valid record is a torn tail and is cut; damage followed by
  valid records is corruption, kept for fsck to report and never served.
"""
from __future__ import annotations

import errno
import mmap
import os
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import lz4.block
import xxhash

from . import pack as fmt
from .chunks import _KIND_PREFIX, DATA, NODE, ChunkId, chunk_id
from .errors import CorruptChunk, NotFound, StoreError, StoreFull

PACK_NAME = re.compile(r"^pack-(\d{8})\.pack$")
INDEX_NAME = re.compile(r"^pack-(\d{8})\.p?idx$")   # a sealed pack's index, the active one's prefix index
# Write the buffer out once it holds this much. Small enough to stay in the CPU's caches
# between the records' copy into it and the write: with 8 MiB, a mount daemon storing a
# sequential write of new data spent 1.6-2.7 ms per MiB in the write() alone and 2.4-3.7
# sealing, with 1 MiB 0.3-0.5 and 1.0-1.6 (256 MiB of random data, interleaved, load ~4).
_WRITE_AHEAD = 1 << 20
_PROBE = 512  # after a chunk lz4 could not shrink, the next one's first bytes are tried first
_MIN_COMPRESS = 64  # smaller chunks are stored as they are (lz4 would not pay)
_SPAN_GAP = 64 << 10  # get_many: records at most this far apart are read by one pread
_SPAN_MAX = 4 << 20  # ... and one pread reads at most this much
# Pages stored as they are: at most this many bytes, or the live bytes if more (note_live). A
# collection is due at ~768 MiB of them (Store.gc_due: GC_MIN_GROWTH, such pages counted at a
# third), the group daemon looks every 5 s, and a collection of a 100 MiB Redis group's store
# took 12 s (2.5-3 s of it in the trio thread) while the group stored ~70 MB/s of pages: with
# 1 GiB the budget ran out in most collections, and the pages were lz4'd as they were put, in
# the trio thread (half the pages of a 25 s run, ~10% of the daemon's CPU under py-spy). 100 MiB
# Redis at 10 Hz, 40 s runs in turns (3 pairs, load 5.2-6.2): daemon CPU per checkpoint
# 51.4/51.3/52.8 -> 43.0/37.8/46.4 ms (1 -> 2 GiB). A small disk is still kept by the room share.
PENDING_CAP = 2 << 30
PENDING_ROOM_SHARE = 4  # pages stored as they are take at most this share of the room they and the free space make
PREFIX_INDEX_STEP = 1024  # a prefix index segment names at least this many records
DAMAGED_TAIL = ".damaged-tail-at-"  # pack-N.pack.damaged-tail-at-OFFSET: bytes cut on open


def _pack_path(directory: Path, number: int, suffix: str = ".pack") -> Path:
    return directory / f"pack-{number:08d}{suffix}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(final: Path, data: bytes, *, durable: bool) -> None:
    """Write `data` as the file `final` at once: a tmp file renamed over it (fsync'd first,
    and the directory after, if `durable`)."""
    tmp = final.with_name(final.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(final.parent)


def _last_record(entries: bytes) -> fmt.RecordInfo | None:
    """The last record named by index entries `entries`."""
    return fmt.decode_entries(entries[-fmt.INDEX_ENTRY.size:])[0] if entries else None


# A chunk's location in the index, one int: pack | offset (36 bits) | stored_len (25) | kind (1)
_LEN_MASK = (1 << 25) - 1
_OFFSET_SHIFT, _OFFSET_MASK = 26, (1 << 36) - 1
_PACK_SHIFT = 62
_PREFIXES = (_KIND_PREFIX[DATA], _KIND_PREFIX[NODE])  # by a location's kind bit
_DECODE_HEADER = struct.Struct("<HxBII16s")  # pack.RECORD_HEADER without its kind (the index has it)
_KIND_AT = 16  # where an index entry (pack.INDEX_ENTRY) holds the record's kind
_FLAGS_AT = 17  # ... and its flags
# What finding chunks costs before the index is built (this VM, 2026-12-04), to choose
# between looking each one up (_locate) and building the index first (_looked_up_cheaper):
_BUILD_US = 1.4                 # per chunk indexed
_SORTED_LOOKUP_US = 6.0         # per binary search of a sorted pack index
_SCAN_US_PER_ENTRY = 0.009      # per entry of a search of the bytes of entries in pack order (a miss)
INDEX_STEP = 8192  # chunks index_some adds at a time (~10 ms)
_STORE_RECORD_KIND = re.compile(b"[^" + re.escape(bytes([DATA, NODE])) + b"]")  # any kind but a chunk's


@dataclass
class _Unindexed:
    """A pack's index entries whose chunks are not in the index yet: those from byte
    `start` of `entries` (index_some takes them a step at a time)."""
    number: int
    entries: bytes
    sorted_by_id: bool
    start: int = 0


def _size_or_0(path: Path) -> int:
    """The size of a file that another process may have removed (a collection's) meanwhile."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unloc(loc: int) -> tuple[int, int, int, int]:
    return (loc >> _PACK_SHIFT, loc >> _OFFSET_SHIFT & _OFFSET_MASK, loc >> 1 & _LEN_MASK,
            NODE if loc & 1 else DATA)


def _span(locs: Sequence[int], start: int) -> tuple[int, int, int]:
    """(first, span_end, end): the records at `locs[start:end]` (locations sorted: pack
    order) that one pread reads, from byte `first` to `span_end`: of one pack, each at
    most _SPAN_GAP past the one before, at most _SPAN_MAX in all."""
    number, first, stored_len, _ = _unloc(locs[start])
    overhead, count = fmt.RECORD_OVERHEAD, len(locs)
    span_end, end = first + overhead + stored_len, start + 1
    while end < count:
        other, offset, stored_len, _ = _unloc(locs[end])
        record_end = offset + overhead + stored_len
        if other != number or offset - span_end > _SPAN_GAP or record_end - first > _SPAN_MAX:
            break
        span_end = max(span_end, record_end)
        end += 1
    return first, span_end, end


def _pays(packed: bytes, raw_len: int) -> bool:
    """Whether lz4 output of this size is worth storing for raw_len bytes of input."""
    return len(packed) < raw_len - raw_len // 16


def _compressed(payload: bytes, raw_len: int, probe: bool) -> tuple[int, bytes, bool]:
    """A chunk's content as put stores it: (flags, payload, probe), its lz4 block
    (FLAG_LZ4) when that pays, else the content itself (flags 0). `probe`: the last chunk
    tried did not shrink, so this one's first _PROBE bytes are tried first; the probe
    returned is the next chunk's (PackStore._append_records says why)."""
    if raw_len < _MIN_COMPRESS:
        return 0, payload, probe
    if probe and raw_len > _PROBE and not _pays(lz4.block.compress(payload[:_PROBE], store_size=False), _PROBE):
        return 0, payload, True
    packed = lz4.block.compress(payload, store_size=False)
    if _pays(packed, raw_len):
        return fmt.FLAG_LZ4, packed, False
    return 0, payload, True


def _damaged(pack: Path, offset: int) -> CorruptChunk:
    return CorruptChunk(f"{pack.name} offset {offset}: record failed its checksum; the chunk is damaged "
                        f"(`sls fsck {pack.parent.parent}` lists every damaged record)",
                        pack=pack.name, offset=offset)


def _collision(cid: bytes) -> StoreError:
    return StoreError(f"hash collision on chunk {cid.hex()}: refusing to dedup "
                      "different content (report this)")


def _io_error(exc: OSError, what: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"{what}: the disk holding the store is full; free space and retry "
                         "(nothing durable was lost)")
    return StoreError(f"{what}: {exc.strerror}")


def remove_files(paths: Sequence[Path]) -> int:
    """Delete `paths` in order (those missing are skipped), then sync their directory: the
    bytes they held. Touches no PackStore state: any thread (a retired pack's files)."""
    freed = 0
    for path in paths:
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    if paths:
        fsync_dir(paths[0].parent)
    return freed


class PendingSync:
    """The fsync half of a sync (PackStore.begin_sync): `wait()` may run in any thread.
    Once they are durable, the pages of records put as rarely read leave the page cache."""

    def __init__(self, fd: int, position: tuple[int, int], release: list[tuple[int, int]]):
        self.fd, self.position = fd, position    # a descriptor of its own: the pack may be sealed meanwhile
        self.release = release    # (offset, length) in whole pages

    def wait(self) -> None:
        try:
            os.fdatasync(self.fd)     # the data and the size that reaches it; not the mtime
            for offset, length in self.release:
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            raise _io_error(exc, "syncing the store's pack file") from None
        finally:
            os.close(self.fd)


class ChunkCopies:
    """Chunks of one sealed pack that a collection keeps, on their way to the active pack
    (PackStore.copy_batches): `run()` reads their records (one pread per span of nearby
    ones), checks them, and compresses those stored as they were (FLAG_DEFERRED); it
    touches no PackStore state, so it may run in a worker thread (pread and lz4 let go
    of the GIL) while the owner's thread serves requests; PackStore.place_copies then
    appends the results in the owner's thread."""

    def __init__(self, pack: Path, fd: int, version: int, wanted: list[tuple[int, bytes]]) -> None:
        self.pack, self.fd, self.version = pack, fd, version
        self.wanted = wanted      # (location, id), in pack order
        self.records: list[tuple[int, bytes, int, int, bytes]] = []   # (location, id, flags, raw_len, payload)

    def run(self) -> None:
        """Fill `records` (CorruptChunk if a record fails its checks, as move_chunks)."""
        locs = [loc for loc, _cid in self.wanted]
        probe, at = False, 0
        while at < len(locs):
            first, span_end, end = _span(locs, at)
            buf = os.pread(self.fd, span_end - first, first)
            for loc, cid in self.wanted[at:end]:
                offset = loc >> _OFFSET_SHIFT & _OFFSET_MASK
                parsed = fmt.decode_record(buf, offset - first, self.version)
                if parsed is None or parsed[0].id != cid or parsed[0].stored_len != loc >> 1 & _LEN_MASK:
                    raise _damaged(self.pack, offset)
                info, payload = parsed
                flags = info.flags
                if flags & fmt.FLAG_DEFERRED:
                    flags, payload, probe = _compressed(payload, info.raw_len, probe)
                self.records.append((loc, cid, flags, info.raw_len, payload))
            at = end


class PackStore:
    """The on-disk ChunkStore (see objectstore.chunks.ChunkStore)."""

    def __init__(self, directory: Path, seed: int, *, readonly: bool = False,
                 verify_dedup: bool = False, pack_limit: int = 64 << 20):
        self.directory = Path(directory)
        self.seed = seed
        self.readonly = readonly
        self.verify_dedup = verify_dedup
        self.pack_limit = pack_limit
        self.prefix_index_step = PREFIX_INDEX_STEP
        self.index_step = INDEX_STEP
        self._lookups_us = 0.0   # what get_many's look-ups before the index was built cost (estimated)
        self.damage: list[str] = []  # corruption found on open, for fsck
        self._damaged: dict[bytes, tuple[str, int]] = {}  # chunk id -> (pack, offset) of a bad record
        self._chunks: dict[bytes, int] = {}   # the index (_index), once built
        self._unindexed: list[_Unindexed] = []   # packs' entries not in it yet, oldest pack
        # first, all newer than the packs in it (index_some)
        self._meta: list[tuple[int, int, int]] = []  # (pack, offset, kind) in pack order
        self._fds: dict[int, int] = {}
        self._active = 0
        self._active_version = fmt.PACK_VERSION    # of the active pack: its records' checksum
        self._versions: dict[int, int] = {}        # pack number -> version, as learnt (_version)
        self._entries = bytearray()  # index entries of the active pack's first records (index_ahead)
        self._active_records: list[fmt.RecordInfo] = []  # ... and those a scan found after those
        self._prefix_indexed = 0  # records of the active pack its prefix index names (0: none to append to)
        self._written = 0  # bytes of the active pack on disk
        self._buf = bytearray()
        self._rarely_read: list[list[int]] = []  # [start, end) of the active pack's records put as rarely read, until a sync
        self._unsynced = False
        self._probe_first = False  # the last chunk lz4 was tried on did not shrink (_append_records)
        self.appended_bytes = 0  # of records appended since opening (stored sizes: what compression left)
        self._dedup_hits: set[bytes] | None = None  # while a collection runs: see watch_dedup
        self._deferred: dict[int, int] = {}  # pack -> stored bytes of its FLAG_DEFERRED records (once indexed)
        self.pending_cap = PENDING_CAP   # pending_budget_allows: at most this many pending bytes
        self.over_budget = False  # the last pages put_many was to keep as they are were compressed: no budget left
        self.spared: set[int] = set()   # packs of pending pages the last collection left as they were (gc.Collection)
        try:
            self._load()
        except BaseException:          # (damage that refuses the store): no pack left open
            self._close_files()
            raise

    # -- opening ------------------------------------------------------------

    def _load(self) -> None:
        self.directory.mkdir(exist_ok=True)
        if not self.readonly:
            for stale in self.directory.glob("*.tmp"):
                stale.unlink()
        names = [p.name for p in self.directory.iterdir()]
        numbers = sorted(int(m.group(1)) for name in names if (m := PACK_NAME.match(name)))
        self._refuse_lost_packs(names, numbers)
        for number in numbers[:-1]:
            self._load_sealed(number)
            if not self.readonly:
                _pack_path(self.directory, number, ".pidx").unlink(missing_ok=True)
        if numbers:
            self._load_active(numbers[-1])
        elif not self.readonly:
            self._start_pack(1)

    def _refuse_lost_packs(self, names: list[str], numbers: list[int]) -> None:
        """StoreError if an index is there without its pack: the pack was deleted or lost
        (slsfs removes a pack's index files before the pack), and opening without it would
        serve the store as it was before that pack's records, its newest checkpoints gone
        without a word (found: the active pack deleted read as an empty store)."""
        for name in sorted(names):
            if (m := INDEX_NAME.match(name)) and int(m.group(1)) not in numbers:
                pack = _pack_path(self.directory, int(m.group(1)))
                raise StoreError(
                    f"{pack} is missing, but its index {name} is there: the pack file was deleted "
                    "or lost, with the checkpoints, files and process images it held. Put it back "
                    f"from a backup; to open the store without it (what it held is gone; `sls fsck` "
                    f"then names what still refers to it), remove {self.directory / name}")

    def _read_whole(self, number: int) -> tuple[bytes, int, int]:
        """A pack's bytes, and the number and version its header says (FormatError if bad)."""
        with open(_pack_path(self.directory, number), "rb") as f:
            data = f.read()
        written_number, version = fmt.check_pack_header(data, _pack_path(self.directory, number).name)
        self._versions[number] = version
        return data, written_number, version

    def _version(self, number: int) -> int:
        """The format version of pack `number` (its header is read once: sealed packs are
        opened through their index)."""
        version = self._versions.get(number)
        if version is None:
            head = os.pread(self._fd(number), fmt.PACK_HEADER.size, 0)
            version = self._versions[number] = fmt.check_pack_header(head, _pack_path(self.directory, number).name)[1]
        return version

    def _load_sealed(self, number: int) -> None:
        idx_path = _pack_path(self.directory, number, ".idx")
        try:
            self._add_entries(number, *fmt.index_body(idx_path.read_bytes(), idx_path.name))
            return
        except (OSError, StoreError):
            pass
        data, _number, version = self._read_whole(number)
        result = fmt.scan(data, version=version)
        self._note_damage(number, data, result, torn_tail_allowed=False)
        entries = fmt.encode_index_entries(result.records)
        if not self.readonly:
            self._write_index(number, fmt.index_from_entries(len(result.records), entries))
        self._add_entries(number, entries)

    def _load_active(self, number: int) -> None:
        path = _pack_path(self.directory, number)
        if path.stat().st_size < fmt.PACK_HEADER.size:
            # a crash while this pack was being started, before its header was durable:
            # it holds nothing, so write its header again
            if not self.readonly:
                path.write_bytes(fmt.pack_header(number))
                fd = self._fd(number, write=True)
                os.fsync(fd)
            self._active, self._active_version = number, fmt.PACK_VERSION
            self._versions[number] = fmt.PACK_VERSION
            self._written = fmt.PACK_HEADER.size
            return
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)   # pages read as scanned
        try:
            version = fmt.check_pack_header(data, path.name)[1]
            known, appendable = self._prefix_index(number, data, version)
            last = _last_record(known)
            result = fmt.scan(data, last.end if last else fmt.PACK_HEADER.size, version)
            self._note_damage(number, data, result, torn_tail_allowed=True)
            if fmt.whole_record_at(data, result.valid_end):
                self._keep_damaged_tail(number, data, result.valid_end)
            size = len(data)
        finally:
            data.close()
        self._add_entries(number, known)
        self._add_entries(number, fmt.encode_index_entries(result.records))
        self._active, self._active_version = number, version    # (appended to in its version)
        self._versions[number] = version
        self._entries = bytearray(known)
        self._active_records = result.records
        self._prefix_indexed = len(known) // fmt.INDEX_ENTRY.size if appendable else 0
        self._written = result.valid_end
        if not self.readonly:
            prefix = _pack_path(self.directory, number, ".pidx")
            if not appendable and prefix.exists():  # (it may name records cut below: never to be read again)
                prefix.unlink()
                fsync_dir(self.directory)           # before a record is written where the cut ones were
            fd = self._fd(number, write=True)
            if size > result.valid_end:
                os.ftruncate(fd, result.valid_end)  # cut the torn tail
            if result.records:
                os.fsync(fd)                        # what the scan found is durable: index it
                self._write_prefix_index()

    def _prefix_index(self, number: int, data: mmap.mmap, version: int) -> tuple[bytes, bool]:
        """The index entries the active pack's prefix index names, if it is intact and its
        last record is in the pack as it says (else none: the whole pack is scanned), and
        whether segments may be appended to it (pack.read_prefix_index)."""
        path = _pack_path(self.directory, number, ".pidx")
        try:
            entries, appendable = fmt.read_prefix_index(path.read_bytes(), path.name)
        except (OSError, StoreError):
            return b"", False
        last = _last_record(entries)
        if last is not None and last.end > len(data):
            # it names records made durable before it was written: the pack lost them
            raise StoreError(
                f"{_pack_path(self.directory, number)} is {len(data)} bytes, but its prefix index "
                f"{path.name} names records up to byte {last.end}: the pack lost records that had been "
                "made durable (truncated outside slsfs?). Put it back from a backup; to open the store "
                f"with the pack as it is (its newest checkpoints lost), remove {path}")
        if last is not None and (fmt.decode_record(data, last.offset, version) or (None,))[0] != last:
            return b"", False
        return entries, appendable

    def _write_prefix_index(self) -> None:
        """After a sync: once prefix_index_step records or more of the active pack are not
        named by its prefix index, name them in a segment appended to it (the whole index
        written anew, tmp + rename, if there is none to append to). They must be on disk."""
        count = self.mark()
        if count - self._prefix_indexed < self.prefix_index_step:
            return
        self.index_ahead()
        final = _pack_path(self.directory, self._active, ".pidx")
        named = self._prefix_indexed * fmt.INDEX_ENTRY.size
        try:
            if named:
                with open(os.open(final, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC), "wb") as f:
                    f.write(fmt.prefix_segment(self._entries[named:]))
            else:
                _replace(final, fmt.prefix_header() + fmt.prefix_segment(self._entries), durable=False)
        except OSError:
            self._prefix_indexed = 0   # (a full disk, say): written anew next time; opening scans a little more
            return
        self._prefix_indexed = count

    def _active_index(self) -> bytes:
        """The index of the active pack's records (index_ahead: each is encoded once, not
        again for every prefix index segment and for the sealed index)."""
        self.index_ahead()
        return fmt.index_from_entries(self.mark(), self._entries)

    def index_ahead(self) -> None:
        """Encode the index entries of the active pack's records not encoded yet (those a
        scan found when the store was opened, or a rollback decoded), which then are kept
        as entries only. (Appended records are encoded as they are appended: encoded all at
        once when the pack was sealed, a 64 MiB pack of GC's copies cost one step 36 ms.)"""
        if self._active_records:
            self._entries += fmt.encode_index_entries(self._active_records)
            self._active_records.clear()

    def _keep_damaged_tail(self, number: int, data: bytes, start: int) -> None:
        """The pack ends in a record that is all there but fails its checksum: that is
        damage, not a torn write (a torn append is short). It is cut like a torn tail so
        the store works on, but its bytes are kept beside the pack and fsck reports them."""
        name = _pack_path(self.directory, number).name
        message = (f"{name} offset {start}: the last record is complete but failed its checksum "
                   "(damage, not a torn write)")
        if not self.readonly:
            saved = self.directory / f"{name}{DAMAGED_TAIL}{start}"
            with open(saved, "wb") as f:
                f.write(data[start:])
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(self.directory)
            message += f"; it was cut from the pack and its bytes kept in {saved.name}"
        self.damage.append(message)

    def _note_damage(self, number: int, data: bytes, result: fmt.ScanResult, *,
                     torn_tail_allowed: bool) -> None:
        name = _pack_path(self.directory, number).name
        for start, end in result.damaged:
            if torn_tail_allowed and start >= result.valid_end:
                continue
            self.damage.append(f"{name} offset {start}: {end - start} damaged bytes skipped "
                               "(records there failed their checksum)")
            cid = fmt.damaged_record_id(data, start)
            if cid is not None:
                self._damaged[cid] = (name, start)

    def _add_entries(self, number: int, entries: bytes, sorted_by_id: bool = False) -> None:
        """Index pack `number`'s records, given as index entries (in pack order, or
        `sorted_by_id`): its store records at once, its chunks when the index is first
        used (_index) or looked up in them before (_locate)."""
        kinds = bytes(entries[_KIND_AT::fmt.INDEX_ENTRY.size])
        found = []
        for at in _STORE_RECORD_KIND.finditer(kinds):
            _cid, kind, _flags, offset, _slen, _rlen = fmt.INDEX_ENTRY.unpack_from(entries, at.start() * fmt.INDEX_ENTRY.size)
            found.append((number, offset, kind))
        self._meta += sorted(found)     # in pack order (a version 2 index lists them by id)
        if entries:
            self._unindexed.append(_Unindexed(number, bytes(entries), sorted_by_id))

    @property
    def _index(self) -> dict[bytes, int]:
        """Chunk id -> location (see _unloc), built on first use (module notes)."""
        return self._index_all()

    def _index_all(self) -> dict[bytes, int]:
        while self._unindexed:
            self.index_some()
        return self._chunks

    def index_some(self) -> bool:
        """Add the next index_step chunks of the oldest pack not yet indexed to the index
        (a chunk in two packs, copied by GC before a crash, is found in the later one);
        whether chunks are left. The location is the one _unloc takes apart, made in
        place: this loop runs once per chunk of the store (a call per chunk was ~40% of it)."""
        if not self._unindexed:
            return False
        part = self._unindexed[0]
        start, end = part.start, min(part.start + self.index_step * fmt.INDEX_ENTRY.size, len(part.entries))
        entries, number = memoryview(part.entries)[start:end], part.number
        self._note_deferred(number, entries)
        index, base = self._chunks, number << _PACK_SHIFT
        for cid, kind, _, offset, stored_len, _ in fmt.INDEX_ENTRY.iter_unpack(entries):
            if kind == DATA:
                index[cid] = base | offset << _OFFSET_SHIFT | stored_len << 1
            elif kind == NODE:
                index[cid] = base | offset << _OFFSET_SHIFT | stored_len << 1 | 1
        part.start = end                # (only now: _locate finds each chunk in one place or the other)
        if end == len(part.entries):
            self._unindexed.pop(0)
        return bool(self._unindexed)

    def _looked_up_cheaper(self, count: int) -> bool:
        """Whether `count` more chunks are to be found by _locate rather than by building
        the rest of the index first: while all the look-ups made so far would not have
        paid for the building (a lazy restore reads the few pages it restores at once, its
        stack and small mappings, from a store of many; an eager one reads them all, and
        builds the index once its look-ups cost as much: at most twice the least cost)."""
        if not self._unindexed:
            return False
        size = fmt.INDEX_ENTRY.size
        lookup = sum(_SORTED_LOOKUP_US if part.sorted_by_id else _SCAN_US_PER_ENTRY * len(part.entries) / size
                     for part in self._unindexed)
        build = _BUILD_US * sum(len(part.entries) - part.start for part in self._unindexed) / size
        self._lookups_us += count * lookup
        return self._lookups_us < build

    def _locate(self, cid: bytes) -> int | None:
        """The location of chunk `cid` (see _unloc), or None if the store lacks it, without
        building the rest of the index: the packs not indexed yet are searched first,
        newest first (they are newer than those indexed; a chunk appended meanwhile is
        in none of them: _append_records). Once the index is whole (a daemon's every
        read), one dict look-up."""
        if not self._unindexed:
            return self._chunks.get(cid)
        for part in reversed(self._unindexed):
            at = fmt.find_entry(part.entries, cid, part.sorted_by_id, part.start)
            if at is not None:
                _cid, kind, _flags, offset, stored_len, _raw = fmt.INDEX_ENTRY.unpack_from(part.entries, at)
                if kind in (DATA, NODE):
                    return part.number << _PACK_SHIFT | offset << _OFFSET_SHIFT | stored_len << 1 | (kind == NODE)
        return self._chunks.get(cid)

    def _note_deferred(self, number: int, entries: bytes) -> None:
        """Add the FLAG_DEFERRED records among index entries of pack `number` to its
        pending bytes (a pack written before version 3 costs one look at its flags)."""
        if not bytes(entries[_FLAGS_AT::fmt.INDEX_ENTRY.size]).translate(None, b"\x00\x01"):
            return
        pending = sum(stored_len for _cid, _kind, flags, _offset, stored_len, _raw in fmt.INDEX_ENTRY.iter_unpack(entries)
                      if flags & fmt.FLAG_DEFERRED)
        self._deferred[number] = self._deferred.get(number, 0) + pending

    def pending_compression(self) -> dict[int, int]:
        """Pack number -> stored bytes of its records kept as they are until the garbage
        collector moves them (FLAG_DEFERRED), for every pack holding any."""
        self._index_all()               # counted as the packs' entries are indexed
        return {number: size for number, size in self._deferred.items() if size}

    def pending_bytes(self) -> int:
        """Stored bytes of every record not compressed yet (FLAG_DEFERRED)."""
        self._index_all()               # counted as the packs' entries are indexed
        return sum(self._deferred.values())

    def note_live(self, live_bytes: int) -> None:
        """A collection found `live_bytes` stored bytes live: pages may be kept as they are
        up to those bytes, or PENDING_CAP if that is more (pending_budget_allows)."""
        self.pending_cap = max(PENDING_CAP, live_bytes)

    def pending_budget_allows(self, adding: int) -> bool:
        """Whether put_many may keep `adding` more bytes of pages stored as they are: the
        pending bytes then stay within their budget (pending_budget)."""
        return self.pending_bytes() + adding <= self.pending_budget()

    def pending_budget(self) -> int:
        """The bytes of pages stored as they are that may be pending in all: `pending_cap`,
        and at most a PENDING_ROOM_SHARE-th of the room they and the disk's free space make
        together (statvfs, less the bytes buffered for the disk), so that a nearly full disk
        is given compressed pages, not ENOSPC."""
        info = os.statvfs(self.directory)
        room = self.pending_bytes() + info.f_bavail * info.f_frsize - len(self._buf)
        return min(self.pending_cap, max(0, room) // PENDING_ROOM_SHARE)

    # -- files ----------------------------------------------------------------

    def _fd(self, number: int, write: bool = False) -> int:
        fd = self._fds.get(number)
        if fd is None:
            flags = os.O_RDWR if (write and not self.readonly) else os.O_RDONLY
            fd = os.open(_pack_path(self.directory, number), flags | os.O_CLOEXEC)
            self._fds[number] = fd
        return fd

    def _start_pack(self, number: int) -> None:
        path = _pack_path(self.directory, number)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            header = fmt.pack_header(number)
            os.write(fd, header)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            path.unlink()
            raise _io_error(exc, f"creating {path.name}") from None
        fsync_dir(self.directory)
        self._fds[number] = fd
        self._active, self._active_version = number, fmt.PACK_VERSION
        self._versions[number] = fmt.PACK_VERSION
        self._entries, self._active_records = bytearray(), []
        self._prefix_indexed = 0
        self._written = len(header)
        self._rarely_read = []

    def _write_index(self, number: int, index: bytes) -> None:
        _replace(_pack_path(self.directory, number, ".idx"), index, durable=True)

    # -- the ChunkStore interface ---------------------------------------------

    def put(self, data: bytes, kind: int = DATA) -> ChunkId:
        cid = chunk_id(kind, data, self.seed)
        if self._locate(cid) is not None:
            if self.verify_dedup and self.get(cid) != data:
                raise _collision(cid)
            if self._dedup_hits is not None:
                self._dedup_hits.add(cid)
            return cid
        self._append(kind, cid, data, compress=True)
        return cid

    def put_many(self, datas: Sequence[bytes], kind: int = DATA, *,
                 compress_later: bool = False, rarely_read: bool = False) -> list[ChunkId]:
        """[put(d, kind) for d in datas] with the same ids and the same records, for a
        fraction of the Python per chunk (the checkpoint's pages): every id is hashed
        first, the new chunks (each distinct one once, in order) are found in one pass
        over the index and appended by one loop (_append_records).

        `compress_later`: the new chunks are stored as they are, marked FLAG_DEFERRED
        (lz4 runs if and when the garbage collector moves them: module notes), when the
        active pack's version has that flag and the pending bytes stay within their budget
        with them (pending_budget_allows); else as put stores them.
        `rarely_read`: their records leave the page cache once a sync made them durable
        (module notes)."""
        defer = compress_later and self._active_version >= fmt.DEFERRING_VERSION
        if len(datas) == 1 and not defer:     # (a run of one page: put's shorter path)
            return [self.put(datas[0], kind)]
        seed = self.seed
        ids = [chunk_id(kind, data, seed) for data in datas]
        index = self._index
        if self.verify_dedup:
            new: dict[bytes, bytes] = {}
            for cid, data in zip(ids, datas):
                known = new.get(cid)
                if known is None and cid in index:
                    known = self.get(cid)
                if known is None:
                    new[cid] = data
                elif known != data:
                    raise _collision(cid)
        else:  # a repeated id keeps its first place (and its bytes are the same)
            new = {cid: data for cid, data in zip(ids, datas) if cid not in index}
        if self._dedup_hits is not None:     # the others were in the index already
            self._dedup_hits.update(cid for cid in ids if cid not in new)
        if defer and new:
            defer = self.pending_budget_allows(sum(map(len, new.values())))
            self.over_budget = not defer
        start = self._position()[1]
        if defer:
            self._append_records(kind, [(cid, fmt.FLAG_DEFERRED if len(data) >= _MIN_COMPRESS else 0, len(data), data)
                                        for cid, data in new.items()])
        elif new:
            self._append_records(kind, [(cid, 0, len(data), data) for cid, data in new.items()], compress=True)
        if rarely_read and new:
            self._note_rarely_read(start, self._position()[1])
        return ids

    def _note_rarely_read(self, start: int, end: int) -> None:
        if self._rarely_read and self._rarely_read[-1][1] == start:
            self._rarely_read[-1][1] = end
        else:
            self._rarely_read.append([start, end])

    def _whole_pages_rarely_read(self) -> list[tuple[int, int]]:
        """The pages that records put as rarely read fill whole, as (offset, length); the
        partial pages at their edges hold other records too, and a partial last page of
        the pack would be read back from the disk before the next append into it."""
        pages = []
        for start, end in self._rarely_read:
            first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, min(end, self._written) & -mmap.PAGESIZE
            if last > first:
                pages.append((first, last - first))
        self._rarely_read = []
        return pages

    def get(self, cid: bytes) -> bytes:
        loc = self._locate(cid)
        if loc is None:
            damaged = self._damaged.get(cid)
            if damaged is not None:
                raise CorruptChunk(f"{damaged[0]} offset {damaged[1]}: chunk {bytes(cid).hex()} is "
                                   f"damaged (its record failed its checksum); run `sls fsck {self.directory.parent}`",
                                   pack=damaged[0], offset=damaged[1])
            raise NotFound(f"chunk {bytes(cid).hex()} is not in the store")
        number, offset, stored_len, kind = _unloc(loc)
        data = self._read_chunk(number, offset, stored_len, cid)
        if chunk_id(kind, data, self.seed) != cid:
            name = _pack_path(self.directory, number).name
            raise CorruptChunk(f"{name} offset {offset}: the record there does not hold chunk "
                               f"{bytes(cid).hex()} (content does not match the id); run "
                               f"`sls fsck {self.directory.parent}`",
                               pack=name, offset=offset)
        return data

    def get_many(self, cids: Sequence[bytes]) -> list[bytes]:
        """[get(c) for c in cids], faster for many small chunks: the records are read in
        pack order, one pread per span of nearby records (see _SPAN_GAP, _SPAN_MAX), and
        decoded from a view of that span (no copy of a record); each is checked by its
        128-bit content id instead of its record checksum (so a record whose checksum
        alone is damaged still reads: its content is proven). A chunk asked for more
        than once is decoded once. A record that fails any check is read again by get(),
        which raises the precise error (NotFound, CorruptChunk) naming the pack and
        offset."""
        locs = list(map(self._locate if self._looked_up_cheaper(len(cids)) else self._index.get, cids))
        if None in locs:
            self.get(cids[locs.index(None)])  # raises: not in the index
        order = sorted(range(len(locs)), key=locs.__getitem__)  # pack order
        ordered = [locs[i] for i in order]
        out: list[bytes | None] = [None] * len(cids)
        start, count = 0, len(order)
        last_number, last_offset, last_len, _ = _unloc(ordered[-1]) if order else (0, 0, 0, 0)
        while start < count:
            number, first, _, _ = _unloc(ordered[start])
            span_end = last_offset + fmt.RECORD_OVERHEAD + last_len
            if last_number == number and span_end - first <= min(_SPAN_MAX, _SPAN_GAP * (count - start)):
                end = count  # the rest at once: one span, no gap to check
            else:
                first, span_end, end = _span(ordered, start)
            self._read_span(number, first, span_end, order[start:end], locs, cids, out)
            start = end
        return out  # type: ignore[return-value]  (every slot is filled)

    def _read_span(self, number: int, first: int, span_end: int, positions: list[int],
                   locs: list[int], cids: Sequence[bytes], out: list[bytes | None]) -> None:
        if number == self._active and span_end > self._written:  # not all on disk yet: one by one
            for position in positions:
                out[position] = self.get(cids[position])
            return
        view = memoryview(os.pread(self._fd(number), span_end - first, first))
        header_size = fmt.RECORD_HEADER.size
        size, shift = len(view), first - header_size  # a record's payload is at its offset - shift
        decode_header, magic_ok = _DECODE_HEADER.unpack_from, fmt.RECORD_MAGIC
        lz4_flag, max_record, seed, prefixes = fmt.FLAG_LZ4, fmt.MAX_RECORD, self.seed, _PREFIXES
        offset_shift, offset_mask, len_mask = _OFFSET_SHIFT, _OFFSET_MASK, _LEN_MASK
        decompress, digest = lz4.block.decompress, xxhash.xxh3_128_digest
        previous, data = None, None
        for position in positions:  # the hot loop: names bound locally
            loc = locs[position]
            if loc == previous:  # the same chunk again (sorted: repeats are neighbours)
                out[position] = data
                continue
            previous, cid = loc, cids[position]
            at = (loc >> offset_shift & offset_mask) - shift
            stored_len = loc >> 1 & len_mask
            data = None
            if at + stored_len <= size:
                magic, flags, header_len, raw_len, rid = decode_header(view, at - header_size)
                if magic == magic_ok and header_len == stored_len and rid == cid:  # (else: damaged)
                    if not flags & lz4_flag:
                        data = view[at:at + stored_len].tobytes()
                    elif raw_len <= max_record:
                        try:
                            data = decompress(view[at:at + stored_len], raw_len)
                        except Exception:  # lz4 raises a plain LZ4BlockError
                            pass
            if data is None or digest(prefixes[loc & 1] + data, seed) != cid:  # chunk_id (chunks.py) in one call
                data = self.get(cid)  # raises the precise error
            out[position] = data

    def has(self, cid: bytes) -> bool:
        """Whether the store holds `cid`. While a collection runs, a yes counts as a dedup
        hit (watch_dedup): a caller asks in order to reference the chunk without putting it
        (a clone's or a received stream's root)."""
        if self._locate(cid) is not None:
            if self._dedup_hits is not None:
                self._dedup_hits.add(cid)
            return True
        return False

    def kind(self, cid: bytes) -> int:
        loc = self._locate(cid)
        if loc is None:
            raise NotFound(f"chunk {bytes(cid).hex()} is not in the store")
        return _unloc(loc)[3]

    def data_chunks(self, cids: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        """(the DATA chunks among `cids`, the others: NODE chunks and ids not in the store),
        by one index look-up each (kind() is three calls a chunk: GC marks millions)."""
        get, data, others = self._index.get, [], []
        for cid in cids:
            loc = get(cid)
            (others if loc is None or loc & 1 else data).append(cid)
        return data, others

    def ids(self) -> Iterator[ChunkId]:
        return (ChunkId(c) for c in list(self._index))

    def __len__(self) -> int:
        return len(self._index)

    # -- records ----------------------------------------------------------------

    def _append(self, kind: int, cid: bytes, data: bytes, *, compress: bool) -> None:
        self._append_records(kind, ((cid, 0, len(data), data),), compress=compress)

    def _append_records(self, kind: int, items: Iterable[tuple[bytes, int, int, bytes]], *,
                        compress: bool = False) -> None:
        """Append one record per (id, flags, raw_len, payload) to the buffer and index it
        (its index entry encoded at once, and its location in the chunk index); the buffer
        is written out whenever it passes _WRITE_AHEAD (between records, as one at a time).
        A chunk appended before the index is whole is one no pack holds (put looks first;
        put_many and the collector build the index), so _locate finds it where it goes.
        `compress`: the payloads are contents (flags 0), stored as their lz4 block when that
        saves a sixteenth or more (_pays).

        The hot loop of every put, one loop for all of a record's work with the names
        bound locally: a checkpoint's pages went through a generator (the compression), a
        call (the record) and a RecordInfo (encoded later), ~1 us a page more of the group
        daemon's ~16 (real Redis pages, this machine).

        Cheap rejection of incompressible chunks: after a chunk that lz4 did not shrink
        enough, the next chunk's first _PROBE bytes are compressed first, and if they do
        not shrink the chunk is stored as it is without trying lz4 on all of it; a
        chunk that compresses ends the run. A run of random or already-compressed pages
        then costs a small lz4 call each instead of a full one, and compressible runs
        pay nothing. The state carries from call to call, so put_many and puts one at a
        time make the same choices (the cost: a chunk whose start is incompressible but
        whose rest is not, right after an incompressible one, is stored uncompressed)."""
        if self.readonly:
            raise StoreError("the store is open read-only")
        self._unsynced = True
        self.index_ahead()                  # (the records a scan found come first)
        chunk = kind in (DATA, NODE)
        entries, index, append_record, entry = self._entries, self._chunks, fmt.append_record, fmt.INDEX_ENTRY.pack
        compressed, probe, flag_deferred = _compressed, self._probe_first, fmt.FLAG_DEFERRED
        deferred = 0
        max_record = fmt.MAX_RECORD
        buf, version, written = self._buf, self._active_version, self._written
        located = self._active << _PACK_SHIFT | (kind == NODE)    # a location (see _unloc) less offset, length
        start = written + len(buf)
        try:
            for cid, flags, raw_len, payload in items:
                if raw_len > max_record:           # readers take such a record for a damaged one
                    raise StoreError(f"a chunk of {raw_len} bytes is over the {max_record} bytes a record "
                                     "may hold; it was not stored")
                if compress:
                    flags, payload, probe = compressed(payload, raw_len, probe)
                offset, stored_len = written + len(buf), len(payload)
                if flags & flag_deferred:
                    deferred += stored_len
                append_record(buf, kind, flags, raw_len, cid, payload, version)
                entries += entry(cid, kind, flags, offset, stored_len, raw_len)
                if chunk:
                    index[cid] = located | offset << _OFFSET_SHIFT | stored_len << 1
                else:
                    self._meta.append((self._active, offset, kind))
                if len(buf) >= _WRITE_AHEAD:
                    self._write_out()
                    buf, written = self._buf, self._written
        finally:
            self._probe_first = probe
            self.appended_bytes += self._written + len(self._buf) - start
            if deferred:
                self._deferred[self._active] = self._deferred.get(self._active, 0) + deferred

    def append_meta(self, kind: int, payload: bytes) -> None:
        """Append one of the store's own records (commit, catalog, tag)."""
        self._append(kind, fmt.NO_ID, payload, compress=False)

    def meta_records(self, from_last: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(kind, payload) of every store record in pack order, or of those from the last
        record of kind `from_last` on (all of them if there is none). A damaged record is
        skipped and listed in `damage` (for fsck): the store still opens."""
        entries = list(self._meta)
        if from_last is not None:
            last = max((i for i, entry in enumerate(entries) if entry[2] == from_last), default=0)
            entries = entries[last:]
        for number, offset, kind in entries:
            try:
                info, payload = self._read_record(number, offset, None)
                plain = self._plain(info, payload, number)
            except CorruptChunk as exc:
                if str(exc) not in self.damage:
                    self.damage.append(str(exc))
                continue
            yield kind, plain

    def mark(self) -> int:
        """A position to roll back to if what follows cannot be made durable (the number of
        records of the active pack)."""
        return len(self._entries) // fmt.INDEX_ENTRY.size + len(self._active_records)

    def rollback(self, mark: int) -> None:
        """Forget records appended after `mark` that are still only in the buffer."""
        encoded = len(self._entries) // fmt.INDEX_ENTRY.size
        if mark < encoded:           # (index_ahead encoded some of them)
            self._active_records[:0] = fmt.decode_entries(self._entries[mark * fmt.INDEX_ENTRY.size:])
            del self._entries[mark * fmt.INDEX_ENTRY.size:]
            encoded = mark
        dropped = self._active_records[mark - encoded:]
        if not dropped or dropped[0].offset < self._written:
            if dropped:
                raise StoreError("cannot roll back records already written to disk")
            return
        del self._active_records[mark - encoded:]
        self._buf = self._buf[: dropped[0].offset - self._written]
        self._rarely_read = [[start, min(end, dropped[0].offset)] for start, end in self._rarely_read
                             if start < dropped[0].offset]
        dropped_deferred = sum(r.stored_len for r in dropped if r.flags & fmt.FLAG_DEFERRED)
        if dropped_deferred:
            self._deferred[self._active] -= dropped_deferred
        gone = {(self._active, r.offset) for r in dropped}
        for r in dropped:
            if r.kind in (DATA, NODE):
                self._index.pop(r.id, None)
        self._meta = [m for m in self._meta if (m[0], m[1]) not in gone]

    def _read_chunk(self, number: int, offset: int, stored_len: int, cid: bytes) -> bytes:
        """The plain content of the chunk record at `offset`, its checksum verified:
        the hot path of every read, so it avoids building a RecordInfo."""
        if number == self._active and offset >= self._written:
            info, payload = self._read_record(number, offset, stored_len)
            return self._plain(info, payload, number)
        buf = os.pread(self._fd(number), fmt.RECORD_OVERHEAD + stored_len, offset)
        end = fmt.RECORD_HEADER.size + stored_len
        if len(buf) == end + fmt.CHECKSUM.size:
            magic, _kind, flags, slen, raw_len, rid = fmt.RECORD_HEADER.unpack_from(buf)
            checksum = fmt.RECORD_CHECKSUM[self._version(number)]
            if (magic == fmt.RECORD_MAGIC and slen == stored_len and rid == cid
                    and checksum(buf[:end]) == fmt.CHECKSUM.unpack_from(buf, end)[0]):
                payload = buf[fmt.RECORD_HEADER.size:end]
                if not flags & fmt.FLAG_LZ4:
                    return payload
                try:
                    data = lz4.block.decompress(payload, uncompressed_size=raw_len)
                except Exception:  # lz4 raises a plain LZ4BlockError
                    data = b""
                if len(data) == raw_len:
                    return data
        raise _damaged(_pack_path(self.directory, number), offset)

    def _read_record(self, number: int, offset: int, stored_len: int | None) -> tuple[fmt.RecordInfo, bytes]:
        version = self._version(number)
        if number == self._active and offset >= self._written:
            buf = self._buf
            start = offset - self._written
        else:
            if stored_len is None:
                head = os.pread(self._fd(number), fmt.RECORD_HEADER.size, offset)
                if len(head) == fmt.RECORD_HEADER.size:
                    stored_len = fmt.RECORD_HEADER.unpack(head)[3]
                else:
                    stored_len = 0
            buf = os.pread(self._fd(number), fmt.RECORD_OVERHEAD + stored_len, offset)
            start = 0
        parsed = fmt.decode_record(buf, start, version)
        if parsed is None:
            raise _damaged(_pack_path(self.directory, number), offset)
        return parsed

    def _plain(self, info: fmt.RecordInfo, payload: bytes, number: int) -> bytes:
        if not info.flags & fmt.FLAG_LZ4:
            return payload
        try:
            data = lz4.block.decompress(payload, uncompressed_size=info.raw_len)
        except Exception:  # lz4 raises a plain LZ4BlockError
            data = None
        if data is None or len(data) != info.raw_len:
            name = _pack_path(self.directory, number).name
            raise CorruptChunk(f"{name} offset {info.offset}: compressed payload does not decompress",
                               pack=name, offset=info.offset)
        return data

    # -- durability -------------------------------------------------------------

    def _write_out(self) -> None:
        if not self._buf:
            return
        fd = self._fd(self._active, write=True)
        view = memoryview(self._buf)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(fd, view[done:], self._written + done)
        except OSError as exc:
            view.release()
            os.ftruncate(fd, self._written)
            raise _io_error(exc, "writing the store's pack file") from None
        view.release()
        self._written += done
        self._buf = bytearray()

    def sync(self) -> None:
        """Make every record appended so far durable (one write + one fsync)."""
        pending = self.begin_sync()
        if pending is not None:
            pending.wait()
            self.end_sync(pending)

    def begin_sync(self) -> "PendingSync | None":
        """sync() in halves, for an owner that waits for the fsync in another thread and
        goes on appending meanwhile: every record so far is written to the pack file; the
        returned PendingSync's wait() (any thread) makes them durable; end_sync(it) (the
        owner's thread, after wait) does the rest. None: nothing to make durable."""
        if not self._unsynced:
            return None
        self._write_out()
        return PendingSync(os.dup(self._fd(self._active, write=True)), self._position(),
                           self._whole_pages_rarely_read())

    def end_sync(self, pending: "PendingSync") -> None:
        if self._position() == pending.position:   # nothing appended since begin_sync
            self._unsynced = False
            self._write_prefix_index()             # (it may name fsync'd records only)
        if self._written >= self.pack_limit:
            try:
                self.seal_active()
            except (OSError, StoreError):
                pass  # what was asked for is durable; sealing is retried at the next sync

    def _position(self) -> tuple[int, int]:
        return self._active, self._written + len(self._buf)

    def seal_active(self) -> None:
        """Write the active pack's index and start a new pack."""
        self.sync()
        if self.mark() == 0:
            return
        self._write_index(self._active, self._active_index())
        _pack_path(self.directory, self._active, ".pidx").unlink(missing_ok=True)
        self._start_pack(self._active + 1)

    @property
    def unsynced(self) -> bool:
        return self._unsynced

    # -- maintenance (GC, fsck) -----------------------------------------------

    def pack_numbers(self) -> list[int]:
        return sorted({loc >> _PACK_SHIFT for loc in self._index.values()} |
                      {m[0] for m in self._meta} | {self._active})

    @property
    def active(self) -> int:
        return self._active

    def chunk_locations(self) -> Iterator[tuple[bytes, int, int, int]]:
        """(id, pack, stored_len, kind) of every chunk."""
        for cid, loc in self._index.items():
            number, _off, stored_len, kind = _unloc(loc)
            yield cid, number, stored_len, kind

    def watch_dedup(self) -> set[bytes]:
        """Start recording every chunk a put (or has) finds already stored, until
        end_watch: a collection must keep such a chunk even if it was unreachable when
        the collection started (a dedup hit makes a dead chunk live again without writing
        it). Returns the set being filled."""
        self._dedup_hits = set()
        return self._dedup_hits

    def end_watch(self) -> None:
        self._dedup_hits = None

    def locations(self) -> tuple[list[bytes], list[int]]:
        """The ids of every chunk and their locations, as two lists in the same order (a
        collection goes through them in slices, to `tally`): taken in one go, they are a
        snapshot, and tally need not look each id up again."""
        return list(self._index), list(self._index.values())

    def meta_packs(self) -> set[int]:
        """The packs holding store records (commits, catalogs, tags)."""
        return {m[0] for m in self._meta}

    @staticmethod
    def tally(cids: Iterable[bytes], locs: Iterable[int], live: set[bytes], total: dict[int, int],
              alive: dict[int, int], members: dict[int, list[bytes]]) -> int:
        """Add the chunks `cids` at `locs` (a slice of `locations()`) to the per-pack sums GC
        chooses the packs to compact by: stored bytes of each pack's chunks (`total`), of
        those in `live` (`alive`), each pack's chunk ids (`members`). Returns how many of
        them are not in `live`. One pass taking locations apart in place (chunk_locations'
        call per chunk was most of such a pass: 0.2-0.3 s for 280k chunks), with no look-up
        in the index (a random access into a dict of every chunk, as `cid in live` is into
        the live set: most of the pass's time went into those two). Locations taken before
        steps that only added chunks (the checkpoints between a collection's steps) are
        still right: a chunk moves or leaves the index only by the collection itself, or by
        a rollback of the active pack's buffer (never a pack compacted, whose members
        are looked up again as they are copied: PackStore.copy_batches, move_chunks)."""
        dead, number, found, size, kept = 0, None, [], 0, 0
        for cid, loc in zip(cids, locs):
            if loc >> _PACK_SHIFT != number:    # (the index is in append order: runs of one pack)
                if number is not None:
                    total[number], alive[number] = total.get(number, 0) + size, alive.get(number, 0) + kept
                number, size, kept = loc >> _PACK_SHIFT, 0, 0
                found = members.setdefault(number, [])
            stored_len = loc >> 1 & _LEN_MASK
            size += stored_len
            found.append(cid)
            if cid in live:
                kept += stored_len
            else:
                dead += 1
        if number is not None:
            total[number], alive[number] = total.get(number, 0) + size, alive.get(number, 0) + kept
        return dead

    def move_chunks(self, number: int, cids: Iterable[bytes], keep: Callable[[bytes], bool]) -> int:
        """Of the chunks `cids` of sealed pack `number`: copy those `keep` wants into the
        active pack, as stored (no lz4 again, the checksum verified on the read) or, if
        stored as they were until now (FLAG_DEFERRED), compressed as put would; drop the
        others from the index; ids no longer in that pack are skipped. Returns the bytes
        appended. Their pack may only be deleted once the copies are durable."""
        index, before = self._index, self.appended_bytes
        for cid in cids:
            loc = index.get(cid)
            if loc is None or loc >> _PACK_SHIFT != number:
                continue
            _number, offset, stored_len, kind = _unloc(loc)
            if keep(cid):
                info, payload = self._read_record(number, offset, stored_len)
                if info.flags & fmt.FLAG_DEFERRED:
                    self._append_records(kind, ((cid, 0, info.raw_len, payload),), compress=True)
                else:
                    self._append_records(kind, ((cid, info.flags, info.raw_len, payload),))
            else:
                del index[cid]
        return self.appended_bytes - before

    def copy_batches(self, number: int, cids: Iterable[bytes], batch_bytes: int) -> list[ChunkCopies]:
        """The chunks `cids` still in sealed pack `number`, in pack order, as ChunkCopies of
        about `batch_bytes` stored bytes each (what one holds in memory at a time)."""
        index, wanted = self._index, []
        for cid in cids:
            loc = index.get(cid)
            if loc is not None and loc >> _PACK_SHIFT == number:
                wanted.append((loc, cid))
        wanted.sort()
        pack, fd, version = _pack_path(self.directory, number), self._fd(number), self._version(number)
        batches, start, size = [], 0, 0
        for at, (loc, _cid) in enumerate(wanted):
            size += loc >> 1 & _LEN_MASK
            if size >= batch_bytes or at == len(wanted) - 1:
                batches.append(ChunkCopies(pack, fd, version, wanted[start:at + 1]))
                start, size = at + 1, 0
        return batches

    def place_copies(self, copies: ChunkCopies) -> int:
        """Append the records `copies.run()` prepared to the active pack (each chunk still
        where it was read from: its pack is not retired before this), which moves the
        chunks there. Returns the bytes appended."""
        index, before = self._index, self.appended_bytes
        for node, records in groupby(copies.records, key=lambda record: record[0] & 1):
            self._append_records(NODE if node else DATA, ((cid, flags, raw_len, payload)
                                                          for loc, cid, flags, raw_len, payload in records
                                                          if index.get(cid) == loc))
        copies.records = []
        return self.appended_bytes - before

    def retire_pack(self, number: int) -> list[Path]:
        """Forget sealed pack `number` and its store records, and close it: call it once
        every chunk of it that is kept was moved (move_chunks). Returns its files, for
        remove_files once the copies are durable (the caller's sync), its index files
        first: a crash in between leaves a pack without its index (rebuilt by a scan at
        the next opening, and collected again), never an index without its pack."""
        if number == self._active:
            raise StoreError(f"pack {number} is the active pack; it cannot be deleted")
        self._meta = [m for m in self._meta if m[0] != number]
        self._deferred.pop(number, None)
        fd = self._fds.pop(number, None)
        if fd is not None:
            os.close(fd)
        return [_pack_path(self.directory, number, suffix) for suffix in (".idx", ".pidx", ".pack")]

    def drop_chunks(self, cids: Iterable[bytes]) -> None:
        for cid in cids:
            self._index.pop(cid, None)

    def verify_all(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Re-read every pack and check every record's checksum and id; `progress` is told
        how far, in a line for a person, after each pack."""
        problems = list(self.damage)
        problems.extend(f"{kept.name}: bytes of a damaged record cut from the end of a pack; "
                        "inspect it, then delete it" for kept in sorted(self.directory.glob(f"*{DAMAGED_TAIL}*"))
                        if not any(kept.name in p for p in problems))
        self._write_out()
        numbers = self.pack_numbers()
        indexed: defaultdict[int, list[tuple[bytes, int]]] = defaultdict(list)
        for cid, loc in self._index.items():           # (once: not a pass over the index per pack)
            where, offset = _unloc(loc)[:2]
            indexed[where].append((cid, offset))
        total, done = max(sum(_size_or_0(_pack_path(self.directory, n)) for n in numbers), 1), 0
        for number in numbers:
            name = _pack_path(self.directory, number).name
            try:
                data, written_number, version = self._read_whole(number)
            except (OSError, StoreError) as exc:
                problems.append(f"{name}: cannot be read: {exc}")
                continue
            if written_number != number:
                problems.append(f"{name} offset 0: the header names another pack number (damaged header)")
            result = fmt.scan(data, version=version)
            for start, end in result.damaged:
                if number == self._active and start >= result.valid_end:
                    # past the active pack's last whole record: a torn append (a process killed
                    # inside a write: the kernel stops at a page), which a writable open cuts,
                    # or a last record complete but failing its checksum, which the open
                    # reported already (self.damage); a read-only fsck after a crash sees it
                    continue
                problems.append(f"{name} offset {start}: {end - start} damaged bytes")
            intact = {r.offset for r in result.records}
            problems.extend(f"{name} offset {offset}: chunk {cid.hex()} is indexed there but its record is "
                            "missing or damaged" for cid, offset in indexed[number] if offset not in intact)
            problems.extend(f"{name} offset {offset}: store record (kind {kind}) is missing or damaged"
                            for where, offset, kind in self._meta if where == number and offset not in intact)
            for info, payload in fmt.iter_payloads(data, result.records):
                if info.kind not in (DATA, NODE):
                    continue
                try:
                    plain = self._plain(info, payload, number)
                except CorruptChunk as exc:
                    problems.append(str(exc))
                    continue
                if chunk_id(info.kind, plain, self.seed) != info.id:
                    problems.append(f"{name} offset {info.offset}: content does not match "
                                    f"its id {info.id.hex()}")
            done += len(data)
            if progress:
                progress(f"checking packs: {done / 2**20:.1f} of {total / 2**20:.1f} MiB "
                         f"({min(100, done * 100 // total)}%)")
        return problems

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("pack-*"))

    def close(self) -> None:
        try:
            if not self.readonly:
                self.sync()
        finally:
            self._close_files()

    def _close_files(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
