"""Pack files and their indexes: the byte layout, and reading it back after a crash.

A pack is an append-only file of records. The format is documented in
docs/FORMAT.md ("Packs"); in short::

    pack    = header record*
    header  = "SLSPACK\\0" u32 version u32 pack_number            (16 bytes)
    record  = u16 magic(0x5AA5) u8 kind u8 flags u32 stored_len u32 raw_len
              id[16] payload[stored_len] u32 checksum(everything before it)

The checksum is the low 32 bits of xxh3-64 in version 2 and 3 packs (3 written now) and xxh32
in version 1 packs (still read, and appended to if a store's active pack is one):
xxh32 took 18.5 us per 128 KiB record, xxh3 2.4. Every function that checks or makes
a record takes the pack's `version`.

`kind` is DATA or NODE for chunks (objectstore.chunks) and COMMIT, CATALOG or TAG
for the store's own small records (their id field is zero). Flag bit 0 means the
payload is lz4 block-compressed and `raw_len` is its size once decompressed; bit 1
(version 3 packs) that the payload was stored as it is without trying lz4 (a
checkpoint's pages: compressed when the garbage collector moves them, if they survive).

A sealed pack has an index file beside it (same name, ``.idx``) listing every
record, so opening a store does not read whole packs::

    index   = "SLSPIDX\\0" u32 version u32 count entry[count] u64 xxh64(all before)
    entry   = id[16] u8 kind u8 flags u64 offset u32 stored_len u32 raw_len

Version 2 (written) holds the entries sorted by their bytes (id first), so that a chunk
is found in it by a binary search; version 1 (still read) held them in pack order.

The active pack's prefix index (``.pidx``) names its first records in segments that
are only appended, each checked on its own, so that it can follow the pack closely
without being rewritten (version 1 was a whole index, still read)::

    prefix  = "SLSPIDX\\0" u32 version(2) u32 zero segment*
    segment = u32 count entry[count] u64 xxh64(count and entries)

Simplification: a record whose checksum fails is skipped by `scan`, which then
looks for the next record magic; the caller decides whether the damage is a torn
tail (nothing valid follows) or corruption of data that had been durable.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import xxhash

from .chunks import DATA, NODE
from .errors import FormatError

PACK_VERSION = 3                # written in new packs
PACK_VERSIONS = (1, 2, 3)       # read (and appended to)
DEFERRING_VERSION = 3           # the first whose records may be FLAG_DEFERRED
INDEX_VERSION = 2               # written: entries sorted by id (version 1: in pack order)
INDEX_VERSIONS = (1, 2)         # read
PREFIX_VERSION = 2              # prefix indexes written (appended segments)
PREFIX_WHOLE_VERSION = 1        # a prefix index of version 1 is a whole version 1 index
PREFIX_VERSIONS = (PREFIX_WHOLE_VERSION, PREFIX_VERSION)   # read
PACK_MAGIC = b"SLSPACK\0"
INDEX_MAGIC = b"SLSPIDX\0"
PACK_HEADER = struct.Struct("<8sII")
RECORD_HEADER = struct.Struct("<HBBII16s")
RECORD_MAGIC = 0x5AA5
RECORD_MAGIC_BYTES = struct.pack("<H", RECORD_MAGIC)
CHECKSUM = struct.Struct("<I")
INDEX_HEADER = struct.Struct("<8sII")
INDEX_ENTRY = struct.Struct("<16sBBQII")
INDEX_TRAILER = struct.Struct("<Q")
SEGMENT_COUNT = struct.Struct("<I")
RECORD_OVERHEAD = RECORD_HEADER.size + CHECKSUM.size
MAX_RECORD = 1 << 24


def _xxh3_low32(data) -> int:
    return xxhash.xxh3_64_intdigest(data) & 0xFFFFFFFF


RECORD_CHECKSUM = {1: xxhash.xxh32_intdigest, 2: _xxh3_low32, 3: _xxh3_low32}   # by pack version
_RECORD_HASH = {1: xxhash.xxh32_intdigest, 2: xxhash.xxh3_64_intdigest,
                3: xxhash.xxh3_64_intdigest}   # ... whose low 32 bits it is
_PACK_RECORD_HEADER, _PACK_CHECKSUM = RECORD_HEADER.pack, CHECKSUM.pack

COMMIT = 2
CATALOG = 3
TAG = 4
FLAG_LZ4 = 1
FLAG_DEFERRED = 2      # stored as it is, lz4 not tried yet (version 3 packs on)
NO_ID = bytes(16)
_ID_LEN = len(NO_ID)    # an index entry's first bytes


class RecordInfo(NamedTuple):
    """Where one record sits in a pack, and what it holds. (A tuple: opening a store
    makes one per record of its active pack, and a dataclass costs 3x more.)"""

    offset: int
    kind: int
    flags: int
    stored_len: int
    raw_len: int
    id: bytes

    @property
    def end(self) -> int:
        return self.offset + RECORD_OVERHEAD + self.stored_len


def pack_header(number: int) -> bytes:
    return PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION, number)


def check_pack_header(data: bytes, name: str) -> tuple[int, int]:
    """Return (pack number, pack version) written in a pack's header, or raise FormatError."""
    if len(data) < PACK_HEADER.size:
        raise FormatError(f"{name}: shorter than a pack header ({len(data)} bytes)")
    magic, version, number = PACK_HEADER.unpack_from(data)
    if magic != PACK_MAGIC:
        raise FormatError(f"{name}: not a slsfs pack file (bad magic)")
    if version not in PACK_VERSIONS:
        raise FormatError(f"{name}: pack format version {version}, this slsfs reads versions "
                          f"{PACK_VERSIONS[0]} to {PACK_VERSIONS[-1]}; upgrade slsfs to open this store")
    return number, version


def encode_record(kind: int, flags: int, raw_len: int, cid: bytes, payload: bytes,
                  version: int = PACK_VERSION) -> bytes:
    out = bytearray()
    append_record(out, kind, flags, raw_len, cid, payload, version)
    return bytes(out)


def append_record(buf: bytearray, kind: int, flags: int, raw_len: int, cid: bytes, payload: bytes,
                  version: int = PACK_VERSION) -> None:
    """Append the record encode_record makes to `buf`, the payload copied once (into
    `buf`) and checksummed there: making the record apart and then adding it copied a
    128 KiB block twice more (a pack's write buffer of 64 such records: ~42 us a record
    -> ~66 before, medians of 8 runs, this machine). The hot path of every chunk stored:
    the hash is called directly and masked here (not through RECORD_CHECKSUM's wrapper)
    and the view of the record is a temporary, gone before the checksum is appended
    (a `with` block cost more): 1.4 -> 1.05-1.3 us a 4 KiB page's record, 17.6 -> 10.5 us
    a 128 KiB block's (best of 5, load ~8, 2026-11-30)."""
    start = len(buf)
    try:
        buf += _PACK_RECORD_HEADER(RECORD_MAGIC, kind, flags, len(payload), raw_len, cid)
        buf += payload
        buf += _PACK_CHECKSUM(_RECORD_HASH[version](memoryview(buf)[start:]) & 0xFFFFFFFF)
    except BaseException:
        del buf[start:]             # (out of memory, say): no half record left behind
        raise


def decode_record(buf: bytes, offset: int = 0, version: int = PACK_VERSION) -> tuple[RecordInfo, bytes] | None:
    """Parse and verify the record at `offset` of a pack of `version`; None if it is not
    a valid record."""
    if len(buf) - offset < RECORD_OVERHEAD:
        return None
    magic, kind, flags, stored_len, raw_len, cid = RECORD_HEADER.unpack_from(buf, offset)
    if magic != RECORD_MAGIC or stored_len > MAX_RECORD or raw_len > MAX_RECORD:
        return None
    body = offset + RECORD_HEADER.size
    end = body + stored_len
    if end + CHECKSUM.size > len(buf):
        return None
    (stored_sum,) = CHECKSUM.unpack_from(buf, end)
    if RECORD_CHECKSUM[version](memoryview(buf)[offset:end]) != stored_sum:
        return None
    info = RecordInfo(offset, kind, flags, stored_len, raw_len, bytes(cid))
    return info, bytes(memoryview(buf)[body:end])


@dataclass
class ScanResult:
    """Every valid record of a pack, plus the byte ranges that did not parse."""

    records: list[RecordInfo]
    damaged: list[tuple[int, int]]  # (start, end) of unreadable regions
    valid_end: int  # end of the last valid record (or of the header)


def scan(buf: bytes, start: int = PACK_HEADER.size, version: int = PACK_VERSION) -> ScanResult:
    """Walk the bytes of a pack of `version` record by record, resynchronising after damage."""
    records: list[RecordInfo] = []
    damaged: list[tuple[int, int]] = []
    pos = start
    valid_end = start
    size = len(buf)
    while pos < size:
        parsed = decode_record(buf, pos, version)
        if parsed is not None:
            info = parsed[0]
            records.append(info)
            pos = valid_end = info.end
            continue
        nxt = _next_record(buf, pos + 1, version)
        damaged.append((pos, nxt))
        pos = nxt
    return ScanResult(records, damaged, valid_end)


def _next_record(buf: bytes, pos: int, version: int) -> int:
    while True:
        pos = buf.find(RECORD_MAGIC_BYTES, pos)
        if pos < 0:
            return len(buf)
        if decode_record(buf, pos, version) is not None:
            return pos
        pos += 1


def whole_record_at(buf: bytes, offset: int) -> bool:
    """Whether a record header at `offset` declares a length that fits in `buf`
    (so a checksum failure there is damage: a torn write leaves a short record)."""
    if len(buf) - offset < RECORD_HEADER.size:
        return False
    magic, _kind, _flags, stored_len, raw_len, _cid = RECORD_HEADER.unpack_from(buf, offset)
    return (magic == RECORD_MAGIC and stored_len <= MAX_RECORD and raw_len <= MAX_RECORD
            and offset + RECORD_OVERHEAD + stored_len <= len(buf))


def damaged_record_id(buf: bytes, offset: int) -> bytes | None:
    """The chunk id in the header of a damaged record at `offset`, if the header
    still looks like one (so a read of that chunk can name where it was)."""
    if len(buf) - offset < RECORD_HEADER.size:
        return None
    magic, kind, _flags, _slen, _rlen, cid = RECORD_HEADER.unpack_from(buf, offset)
    if magic != RECORD_MAGIC or kind not in (DATA, NODE) or cid == NO_ID:
        return None
    return bytes(cid)


def encode_index(records: list[RecordInfo]) -> bytes:
    return index_from_entries(len(records), encode_index_entries(records))


def encode_index_entries(records: Iterable[RecordInfo]) -> bytes:
    """The index entries of `records`, in order (an index is its header, these, its trailer)."""
    return b"".join(INDEX_ENTRY.pack(r.id, r.kind, r.flags, r.offset, r.stored_len, r.raw_len)
                    for r in records)


def index_from_entries(count: int, entries: bytes) -> bytes:
    """The index of `count` records whose entries (encode_index_entries) are `entries`,
    in pack order: the index holds them sorted by id (version 2), so that a reader finds
    a chunk in it without reading every entry (find_entry). The sort costs the sealing
    thread ~10 ms for a pack of 16,000 pages stored as they are, 30-40 ms for one of
    50,000 the collector compressed (~1 % of a CPU for a 100 MiB Redis checkpointed 10
    times a second, which seals a pack about every second)."""
    size = INDEX_ENTRY.size
    ordered = [entries[at:at + size] for at in range(0, len(entries), size)]
    ordered.sort()
    body = INDEX_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, count) + b"".join(ordered)
    return body + INDEX_TRAILER.pack(xxhash.xxh64(body).intdigest())


def find_entry(entries: bytes, cid: bytes, sorted_by_id: bool, start: int = 0) -> int | None:
    """Where in `entries` (index entries: sorted by id, or in pack order), from byte
    `start` on (an entry's), an entry names `cid`, or None: a binary search of sorted ones
    (a few microseconds in a 64 MiB pack's 16,000), a search of the bytes otherwise (an
    entry's id is where an entry starts)."""
    size = INDEX_ENTRY.size
    if sorted_by_id:
        at = bisect.bisect_left(range(len(entries) // size), cid, lo=start // size,
                                key=lambda i: entries[i * size:i * size + _ID_LEN]) * size
        return at if entries[at:at + _ID_LEN] == cid else None
    at = entries.find(cid, start)
    while at >= 0 and at % size:        # the id's bytes inside another field or across two
        at = entries.find(cid, at + 1)
    return at if at >= 0 else None


def decode_index(data: bytes, name: str) -> list[RecordInfo]:
    """Parse a pack index; FormatError if it is damaged (the caller rebuilds it)."""
    return [RecordInfo(off, kind, flags, slen, rlen, cid)
            for cid, kind, flags, off, slen, rlen in index_entries(data, name)]


def decode_entries(entries: bytes) -> list[RecordInfo]:
    """The records whose index entries (encode_index_entries) are `entries`."""
    return [RecordInfo(off, kind, flags, slen, rlen, cid)
            for cid, kind, flags, off, slen, rlen in INDEX_ENTRY.iter_unpack(entries)]


def prefix_header() -> bytes:
    """The first bytes of a prefix index (segments follow)."""
    return INDEX_HEADER.pack(INDEX_MAGIC, PREFIX_VERSION, 0)


def prefix_segment(entries: bytes) -> bytes:
    """A prefix index segment naming the records whose index entries are `entries`."""
    head = SEGMENT_COUNT.pack(len(entries) // INDEX_ENTRY.size)
    digest = xxhash.xxh64(head)
    digest.update(entries)
    return head + entries + INDEX_TRAILER.pack(digest.intdigest())


def read_prefix_index(data: bytes, name: str) -> tuple[bytes, bool]:
    """The index entries a prefix index names (its segments up to the first torn or
    damaged one: a crash while one was appended), and whether it ends after them, so that
    segments may be appended to it (False: it must be written anew first). A version 1
    prefix index is a whole index. FormatError if its header is damaged or of another
    version (or a version 1 one is damaged)."""
    if len(data) < INDEX_HEADER.size:
        raise FormatError(f"{name}: truncated prefix index")
    magic, version, _zero = INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC or version not in PREFIX_VERSIONS:
        raise FormatError(f"{name}: not a prefix index of version {PREFIX_VERSIONS[0]} to {PREFIX_VERSIONS[-1]}")
    view = memoryview(data)
    if version == PREFIX_WHOLE_VERSION:
        index_entries(data, name)                       # (checks it whole)
        return bytes(view[INDEX_HEADER.size:len(data) - INDEX_TRAILER.size]), False
    parts, pos, size = [], INDEX_HEADER.size, len(data)
    while pos + SEGMENT_COUNT.size <= size:
        (count,) = SEGMENT_COUNT.unpack_from(data, pos)
        end = pos + SEGMENT_COUNT.size + count * INDEX_ENTRY.size
        if (end + INDEX_TRAILER.size > size
                or xxhash.xxh64(view[pos:end]).intdigest() != INDEX_TRAILER.unpack_from(data, end)[0]):
            break
        parts.append(view[pos + SEGMENT_COUNT.size:end])
        pos = end + INDEX_TRAILER.size
    return b"".join(parts), pos == size


def index_entries(data: bytes, name: str) -> Iterator[tuple[bytes, int, int, int, int, int]]:
    """A pack index's entries as (id, kind, flags, offset, stored_len, raw_len), checked
    whole first (FormatError if damaged)."""
    return INDEX_ENTRY.iter_unpack(index_body(data, name)[0])


def index_body(data: bytes, name: str) -> tuple[memoryview, bool]:
    """The entries of a pack index (encode_index_entries' bytes), checked whole first
    (FormatError if damaged), and whether they are sorted by id (version 2) rather than
    in pack order. Opening a store reads every sealed pack's index this way, without a
    RecordInfo per record (~4 per 16 KiB of pages stored)."""
    if len(data) < INDEX_HEADER.size + INDEX_TRAILER.size:
        raise FormatError(f"{name}: truncated pack index")
    magic, version, count = INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC or version not in INDEX_VERSIONS:
        raise FormatError(f"{name}: not a pack index of version {INDEX_VERSIONS[0]} to {INDEX_VERSIONS[-1]}")
    body_len = INDEX_HEADER.size + count * INDEX_ENTRY.size
    if len(data) != body_len + INDEX_TRAILER.size:
        raise FormatError(f"{name}: pack index has the wrong length")
    (stored,) = INDEX_TRAILER.unpack_from(data, body_len)
    if xxhash.xxh64(memoryview(data)[:body_len]).intdigest() != stored:
        raise FormatError(f"{name}: pack index checksum mismatch")
    return memoryview(data)[INDEX_HEADER.size:body_len], version >= 2


def iter_payloads(buf: bytes, records: list[RecordInfo]) -> Iterator[tuple[RecordInfo, bytes]]:
    for r in records:
        body = r.offset + RECORD_HEADER.size
        yield r, bytes(memoryview(buf)[body:body + r.stored_len])
