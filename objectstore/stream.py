"""Send and receive streams: one checkpoint (full, or incremental against a base)
as a byte stream that another store can apply, like `zfs send | zfs recv`.

Stream format (docs/FORMAT.md, "Send streams")::

    stream  = "SLSSTRM\\0" u32 version u32 header_len header u64 header_digest record* end
    header  = JSON: {"store": uuid, "seed": hex, "commit": {...}, "base": {...} | null,
                     "names": [the commit's names in the sending store]}
    header_digest = xxh64 of the header's bytes (version 3)
    record  = a pack record (objectstore.pack) of kind DATA or NODE, children first
    end     = a pack record of kind END whose payload is JSON {"chunks": n, "digest": hex}

Records come in post-order (every chunk after the chunks it references), so the
receiver checks, as it goes, that each node only references chunks it already has,
and that each chunk's content matches its id. Nothing is committed unless the whole
stream, END record included, arrived intact: a truncated, corrupt or hostile stream
is refused with StreamError and leaves the receiving store's history unchanged. The
header has a digest of its own: the records' checks do not cover its time, label and
names, which a flipped bit would otherwise change unseen.

The stream carries the sending store's dedup seed. A store created by `recv`
adopts it, so later incremental streams apply by id; a store with another seed
accepts full streams by re-keying every chunk, and refuses incremental ones.
The checkpoint's time travels with it, as a ZFS snapshot's creation time and a restic
snapshot's time do: the received copy is dated when it was taken, not when it arrived.
The checkpoint's names travel with it (as a ZFS snapshot's do): the receiver names its
copy alike (unless it uses the name already), which keeps the copy through retention
and lets either store send the other an incremental stream `--from` that name.
Because the seed travels, a stream is as confidential as the data it holds.
"""
from __future__ import annotations

import itertools
import json
import struct
from typing import BinaryIO, Callable, Iterable, Iterator

import xxhash

from . import pack as fmt
from .chunks import DATA, NODE, ChunkId, chunk_id
from .errors import StoreError
from .gc import reachable
from .store import Commit, Store, check_tag_name
from .tree import _Node, decode_node, encode_node

STREAM_MAGIC = b"SLSSTRM\0"
STREAM_VERSION = 3       # 2: the header's "names"; 3: the header's digest
READ_VERSIONS = (1, 2, 3)
DIGESTED_HEADER_VERSION = 3
RECORD_VERSION = 1      # a stream's records are pack records of pack version 1 (xxh32 checksum)
END = 5
_HEAD = struct.Struct("<8sII")
_HEADER_DIGEST = struct.Struct("<Q")
MAX_HEADER = 16 << 20
# Chunks read together by send (Store.get_many: in pack order, neighbours in one pread),
# then written in the stream's order: a group's image is thousands of 4 KiB pages, and one
# pread each, in tree order, read a store the page cache had dropped at ~100 MB/s. A 32 MiB
# group and a 64 MiB tree (37 MB sent), cold: 0.53-0.55 -> 0.32-0.34 s; `send | recv`, warm:
# 0.39-0.43 -> 0.34-0.41 s. Larger batches keep the receiver waiting: 256 made the pipe
# 0.46-0.49 s.
SEND_BATCH = 32


class StreamError(StoreError):
    """A stream that cannot be applied: truncated, corrupt, hostile or out of order."""


def _post_order(store: Store, roots: Iterable[bytes], skip: set[bytes]) -> Iterable[bytes]:
    emitted: set[bytes] = set()
    for root in roots:
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            cid, expanded = stack.pop()
            if cid in emitted or cid in skip:
                continue
            if expanded or store.kind(cid) != NODE:
                emitted.add(cid)
                yield cid
                continue
            stack.append((cid, True))
            node = decode_node(store.get(cid), ChunkId(cid))
            links = [r for e in node.vals for r in e.refs] if node.leaf else node.vals
            stack.extend((c, False) for c in links if c not in emitted and c not in skip)


def _batches(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    rest = iter(items)
    while batch := list(itertools.islice(rest, size)):
        yield batch


def send(store: Store, commit: Commit, out: BinaryIO, base: Commit | None = None,
         progress: Callable[[int], None] | None = None) -> dict:
    """Write `commit` as a stream to `out`; with `base`, only chunks it lacks."""
    skip = reachable(store, base.roots.values()) if base is not None else set()
    header = json.dumps({"store": store.uuid, "seed": f"{store.seed:016x}",
                         "commit": commit.to_json(),
                         "base": base.to_json() if base is not None else None,
                         "names": sorted(n for n, c in store.tags().items() if c == commit.id)}).encode()
    out.write(_HEAD.pack(STREAM_MAGIC, STREAM_VERSION, len(header)) + header
              + _HEADER_DIGEST.pack(xxhash.xxh64_intdigest(header)))
    digest = xxhash.xxh64()
    count = sent = 0
    for batch in _batches(_post_order(store, sorted(set(commit.roots.values())), skip), SEND_BATCH):
        for cid, data in zip(batch, store.get_many(batch)):
            record = fmt.encode_record(store.kind(cid), 0, 0, cid, data, RECORD_VERSION)
            digest.update(cid)
            out.write(record)
            count += 1
            sent += len(record)
            if progress:
                progress(sent)
    end = json.dumps({"chunks": count, "digest": digest.hexdigest()}).encode()
    out.write(fmt.encode_record(END, 0, 0, fmt.NO_ID, end, RECORD_VERSION))
    out.flush()
    return {"commit": commit.id, "base": base.id if base else None, "chunks": count, "bytes": sent}


class _Reader:
    def __init__(self, inp: BinaryIO):
        self.inp = inp

    def exactly(self, n: int, what: str) -> bytes:
        data = self.inp.read(n)
        if data is None or len(data) != n:
            raise StreamError(f"stream truncated while reading {what}: nothing was received; "
                              "send the stream again")
        return data

    def record(self) -> tuple[fmt.RecordInfo, bytes]:
        head = self.exactly(fmt.RECORD_HEADER.size, "a record header")
        stored_len = fmt.RECORD_HEADER.unpack(head)[3]
        if stored_len > fmt.MAX_RECORD:
            raise StreamError(f"stream record claims {stored_len} bytes: corrupt or hostile stream")
        rest = self.exactly(stored_len + fmt.CHECKSUM.size, "a record")
        parsed = fmt.decode_record(head + rest, 0, RECORD_VERSION)
        if parsed is None:
            raise StreamError("stream record failed its checksum: the stream is corrupt")
        return parsed


def read_header(inp: BinaryIO) -> dict:
    reader = _Reader(inp)
    magic, version, length = _HEAD.unpack(reader.exactly(_HEAD.size, "the stream header"))
    if magic != STREAM_MAGIC:
        raise StreamError("not a slsfs send stream (bad magic)")
    if version not in READ_VERSIONS:
        raise StreamError(f"send stream version {version}; this slsfs reads versions "
                          f"{READ_VERSIONS[0]} to {READ_VERSIONS[-1]}: receive it with the sender's slsfs")
    if length > MAX_HEADER:
        raise StreamError("stream header too large: corrupt or hostile stream")
    raw = reader.exactly(length, "the stream header")
    if version >= DIGESTED_HEADER_VERSION:
        [digest] = _HEADER_DIGEST.unpack(reader.exactly(_HEADER_DIGEST.size, "the stream header's digest"))
        if digest != xxhash.xxh64_intdigest(raw):
            raise StreamError("stream header is damaged (its digest does not match): the stream is "
                              "corrupt; send it again")
    try:
        header = json.loads(raw)
        int(header["seed"], 16)
        header["commit"]["roots"]
        if not all(isinstance(n, str) for n in header.setdefault("names", [])):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise StreamError("stream header is damaged") from None
    return header


def _commit(rec: dict) -> Commit:
    try:
        return Commit(int(rec["id"]), rec["parent"], float(rec["time"]), str(rec["label"]),
                      {str(k): ChunkId(bytes.fromhex(v)) for k, v in rec["roots"].items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StreamError("stream header names a malformed checkpoint") from None


#: recv's `as_base(store, name, mine, base)`: whether the receiving store's root `name`
#: (`mine`), another tree than the stream's base's (`base`), holds nothing more than it
#: (a layer above may note things in a root that change no checkpoint of it).
AsBase = Callable[[Store, str, ChunkId, ChunkId], bool]


def recv(store: Store, inp: BinaryIO, header: dict | None = None, *, force: bool = False,
         as_base: AsBase | None = None, progress: Callable[[int], None] | None = None) -> Commit:
    """Apply a stream to `store` and commit it; return the new local commit. An
    incremental stream replaces the receiving store's roots only where they are the
    base's (or `as_base` says they hold nothing more), unless `force`. `progress` is
    told the bytes of records received so far, after each."""
    header = header or read_header(inp)
    sent = _commit(header["commit"])
    base = _commit(header["base"]) if header.get("base") else None
    same_seed = int(header["seed"], 16) == store.seed
    if base is not None:
        if not same_seed:
            raise StreamError("incremental stream from a store with another seed: receive a "
                              "full stream first (into a new store, so it adopts the seed)")
        if not any(c.roots == base.roots for c in store.log()):
            raise StreamError(f"the stream's base (checkpoint {base.id} of the sender) is not in "
                              "this store: send a full stream, or an incremental one from a base "
                              "this store has")
    idmap: dict[bytes, bytes] = {}
    digest = xxhash.xxh64()
    reader = _Reader(inp)
    count = received = 0
    while True:
        info, payload = reader.record()
        if info.kind == END:
            break
        if info.kind not in (DATA, NODE) or info.flags:
            raise StreamError(f"stream record of unknown kind {info.kind}: corrupt or hostile stream")
        if chunk_id(info.kind, payload, int(header["seed"], 16)) != info.id:
            raise StreamError(f"stream chunk {info.id.hex()} does not match its content: corrupt stream")
        idmap[info.id] = _apply(store, info.kind, payload, info.id, idmap, same_seed)
        digest.update(info.id)
        received += fmt.RECORD_OVERHEAD + len(payload)
        if progress:
            progress(received)
        count += 1
    try:
        end = json.loads(payload)
    except ValueError:
        raise StreamError("stream end record is damaged") from None
    if end.get("chunks") != count or end.get("digest") != digest.hexdigest():
        raise StreamError("stream end record does not match what was received: corrupt stream")
    roots = {}
    for name, root in sent.roots.items():
        local = idmap.get(root, root if same_seed else None)
        if local is None or not store.has(local):
            raise StreamError(f"stream does not contain root {name!r}: incomplete stream")
        roots[name] = local
    _install_roots(store, roots, base, force, as_base)
    got = store.commit(sent.label or f"received checkpoint {sent.id}", taken=sent.time)
    _name_like_the_sender(store, got, header["names"])
    return got


def _name_like_the_sender(store: Store, got: Commit, names: list[str]) -> None:
    """Give the received commit the names it had in the sending store, except those this
    store uses already (its own checkpoints keep them) or cannot hold."""
    taken = store.tags()
    for name in names:
        if name in taken or not _valid_name(name):
            continue
        store.tag(name, got.id)


def _valid_name(name: str) -> bool:
    try:
        check_tag_name(name)
    except StoreError:
        return False
    return True


def _apply(store: Store, kind: int, payload: bytes, sid: bytes, idmap: dict, same_seed: bool) -> bytes:
    def local(ref: bytes) -> bytes:
        mapped = idmap.get(ref, ref if same_seed else None)
        if mapped is None or not store.has(mapped):
            raise StreamError(f"stream chunk {sid.hex()} references {ref.hex()}, which was not "
                              "sent before it and is not in this store: corrupt or hostile stream")
        return mapped

    if kind == DATA:
        return store.put(payload, DATA)
    try:
        node = decode_node(payload, ChunkId(sid))
    except StoreError as exc:
        raise StreamError(f"stream holds a malformed tree node: {exc}") from None
    if node.leaf:
        vals = [e._replace(refs=tuple(ChunkId(local(r)) for r in e.refs)) for e in node.vals]
    else:
        vals = [ChunkId(local(c)) for c in node.vals]
    if same_seed:
        return store.put(payload, NODE)
    return store.put(encode_node(_Node(node.leaf, node.keys, vals)), NODE)


def _install_roots(store: Store, roots: dict[str, ChunkId], base: Commit | None, force: bool,
                   as_base: AsBase | None) -> None:
    current = store.roots()
    for name, root in roots.items():
        mine = current.get(name)
        expected = base.roots.get(name) if base is not None else None
        if (mine is not None and mine != root and mine != expected and not force
                and not (expected is not None and as_base is not None and as_base(store, name, mine, expected))):
            raise StreamError(f"{name!r} in the receiving store has changed since the stream's base "
                              f"(checkpoint {base.id} of the sender): receiving would put the stream's in "
                              "its place. Pass --force to do so (what the store holds now stays in its "
                              "history: sls log), or receive into a new store" if base is not None else
                              f"{name!r} exists in the receiving store and differs from the stream's: "
                              "receive into a new store, or pass --force to replace it")
    for name, root in roots.items():
        if name.startswith("vol/"):
            vol = name[4:]
            if vol in store.volumes():
                store.drop_volume(vol)
            store.create_volume(vol, root)
        elif name == "openrefs":
            store.replace_openrefs(root)
        else:
            store.set_root(name, root)
