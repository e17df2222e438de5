"""Copy-on-write B+trees stored as NODE chunks: ordered maps from bytes to bytes.

Every metadata structure of slsfs is one of these: a volume's inode table and
directory entries, file block maps, process page maps, the open-refcount table.
An entry is a value plus *refs*, the chunk ids the value stands for (data blocks,
pages, roots of other trees): the garbage collector follows refs, and `send`
translates them, so a chunk id must be kept in refs, never only inside a value.

Nodes that were read or written are immutable and shared (by chunk id); a change
copies the nodes on the path from the root to the changed leaf, and `flush()`
writes exactly those. A flush therefore costs O(changed keys x depth), whatever
the tree's size, and `copy()` is O(1).

Node encoding (docs/FORMAT.md, "Tree nodes")::

    leaf     = "L" u8 version u32 count (u16 klen u32 vlen u8 nrefs key value ref[16]*nrefs)*
    internal = "I" u8 version u32 count (u16 klen key child[16])*

In an internal node the key of child i is the smallest key child i may hold; the
key of child 0 is empty (it stands for minus infinity).

Simplifications: deletes remove empty nodes but never merge half-empty ones; a
tree must not be changed while one of its `items()` iterators is running.
"""
from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from itertools import chain
from operator import itemgetter
from typing import Generator, Iterator, NamedTuple, Sequence, TypeVar

from .chunks import NODE, ChunkId, ChunkStore
from .errors import CorruptChunk

TREE_VERSION = 1
LEAF_BYTES = 4096
INTERNAL_FANOUT = 128
MAX_KEY = 0xFFFF
_HEAD = struct.Struct("<cBI")
_LEAF_ENTRY = struct.Struct("<HIB")
_INNER_ENTRY = struct.Struct("<H")
_ID = 16
_CHUNK_ID_TYPE = {bytes}  # refs already of this type are kept as they are


class Entry(NamedTuple):
    value: bytes
    refs: tuple[bytes, ...]


class _Node:
    """A decoded node. `cid` is set while the node is clean (immutable, shared).

    `enc` keeps each entry's encoding (a leaf's whole entry; an internal node's
    key part, the child id follows it) beside keys and vals, so that writing a
    node whose one entry changed does not re-encode the others: flushes are the
    hot path of every commit. None means "not computed yet" (encode_node fills it)."""

    __slots__ = ("leaf", "keys", "vals", "cid", "size", "enc")

    def __init__(self, leaf: bool, keys: list[bytes], vals: list, cid: ChunkId | None = None,
                 size: int = 0, enc: list[bytes] | None = None):
        self.leaf = leaf
        self.keys = keys
        self.vals = vals  # leaf: Entry; internal: _Node (dirty) or ChunkId (clean)
        self.cid = cid
        self.size = size
        self.enc = enc

    def mutable_copy(self) -> "_Node":
        return _Node(self.leaf, list(self.keys), list(self.vals), None, self.size,
                     None if self.enc is None else list(self.enc))


def _entry_size(key: bytes, entry: Entry) -> int:
    return _LEAF_ENTRY.size + len(key) + len(entry.value) + _ID * len(entry.refs)


def _leaf_enc(key: bytes, entry: Entry) -> bytes:
    return b"".join((_LEAF_ENTRY.pack(len(key), len(entry.value), len(entry.refs)), key, entry.value,
                     *entry.refs))


def _inner_enc(key: bytes) -> bytes:
    return _INNER_ENTRY.pack(len(key)) + key


def encode_node(node: _Node) -> bytes:
    if node.enc is None:
        node.enc = ([_leaf_enc(k, e) for k, e in zip(node.keys, node.vals)] if node.leaf
                    else [_inner_enc(k) for k in node.keys])
    head = _HEAD.pack(b"L" if node.leaf else b"I", TREE_VERSION, len(node.keys))
    if node.leaf:
        return head + b"".join(node.enc)
    return head + b"".join(chain.from_iterable(zip(node.enc, node.vals)))


def decode_node(data: bytes, cid: ChunkId) -> _Node:
    """Parse a node chunk; CorruptChunk if it is not a well-formed node."""
    try:
        kind, version, count = _HEAD.unpack_from(data)
        if version != TREE_VERSION or kind not in (b"L", b"I"):
            raise ValueError(f"node kind {kind!r} version {version}")
        keys: list[bytes] = []
        vals: list = []
        enc: list[bytes] = []
        pos = _HEAD.size
        if kind == b"L":
            for _ in range(count):
                start = pos
                klen, vlen, nrefs = _LEAF_ENTRY.unpack_from(data, pos)
                pos += _LEAF_ENTRY.size
                keys.append(data[pos:pos + klen])
                pos += klen
                value = data[pos:pos + vlen]
                pos += vlen
                refs = tuple([data[p:p + _ID] for p in range(pos, pos + nrefs * _ID, _ID)])
                pos += nrefs * _ID
                if len(value) != vlen or len(refs) != nrefs:
                    raise ValueError("entry runs past the end")
                vals.append(Entry(value, refs))
                enc.append(data[start:pos])
        else:
            for _ in range(count):
                start = pos
                (klen,) = _INNER_ENTRY.unpack_from(data, pos)
                pos += _INNER_ENTRY.size
                keys.append(data[pos:pos + klen])
                pos += klen
                enc.append(data[start:pos])
                vals.append(ChunkId(data[pos:pos + _ID]))
                pos += _ID
        if pos != len(data):
            raise ValueError("trailing bytes")
    except (struct.error, ValueError) as exc:
        raise CorruptChunk(f"tree node {cid.hex()} is malformed: {exc}") from None
    return _Node(kind == b"L", keys, vals, cid, len(data), enc)


def node_links(data: bytes, cid: ChunkId) -> tuple[list[ChunkId], list[bytes]]:
    """(child node ids, refs) of an encoded node: what GC and send follow. Read for those
    alone, no keys, values or entries made (decode_node's): GC's marking parses every
    node every retained checkpoint reaches, and decoding them whole was most of it.
    CorruptChunk if the node is not well-formed, as decode_node."""
    links: list = []
    try:
        kind, version, count = _HEAD.unpack_from(data)
        if version != TREE_VERSION or kind not in (b"L", b"I"):
            raise ValueError(f"node kind {kind!r} version {version}")
        pos = _HEAD.size
        if kind == b"L":
            entry, head = _LEAF_ENTRY.unpack_from, _LEAF_ENTRY.size
            for _ in range(count):
                klen, vlen, nrefs = entry(data, pos)
                start = pos + head + klen + vlen
                pos = start + nrefs * _ID
                links += [data[p:p + _ID] for p in range(start, pos, _ID)]
        else:
            inner, head = _INNER_ENTRY.unpack_from, _INNER_ENTRY.size + _ID
            for _ in range(count):
                pos += inner(data, pos)[0] + head
                links.append(data[pos - _ID:pos])
        if pos != len(data):
            raise ValueError("an entry runs past the end" if pos > len(data) else "trailing bytes")
    except (struct.error, ValueError) as exc:
        raise CorruptChunk(f"tree node {cid.hex()} is malformed: {exc}") from None
    return ([], links) if kind == b"L" else (links, [])


LARGE_NODE = 16 << 10   # NodeCache: a node encoded in more bytes than this is kept apart
LARGE_NODES = 4         # ... at most this many such nodes (the newest used)
_ENTRY_MEMORY = 160     # bytes of Python objects per decoded entry beside its bytes (measured)
_REF_MEMORY = 40        # ... and per ref (a 16-byte bytes object and its slot: 57 bytes, 16 counted)
_REFS = itemgetter(1)   # Entry.refs


def node_memory(node: _Node, size: int) -> int:
    """What a decoded node whose encoding is `size` bytes takes in memory, about: its bytes
    twice (keys and values, and each entry's encoding kept for re-encoding) plus the objects
    of each entry and ref. Measured with sys.getsizeof over every object (2026-12-01): a
    leaf of one 64-page block of a process image 7.3 KiB for 2.1 KiB encoded (this says
    6.9), 27 inode records 9.3 KiB for 2.1 (8.4), 62 directory entries 16.2 KiB for 2.5
    (15.0), an image's 139 KiB metadata 279 KiB (279), an internal node of 40 children 7.6
    KiB for 1.6 (9.6)."""
    refs = sum(map(len, map(_REFS, node.vals))) if node.leaf else 0
    return 2 * size + _ENTRY_MEMORY * len(node.keys) + _REF_MEMORY * refs


class NodeCache:
    """Decoded clean nodes by id, least recently used evicted first, within `capacity`
    nodes and `max_bytes` of the memory they take (node_memory: 2-6 times their encoded
    size). Bytes, not only nodes: one leaf may hold a value of tens of KiB (a process
    image's metadata), and a daemon checkpointing a group 10x a second writes a new one
    each time; counted in nodes alone, the cache held 2-50 KiB per node up to 50,000 nodes
    (a daemon passed 400 MB in minutes, and 2 GB in an hour under Redis). Counted in encoded
    bytes (as it was until 2026-12-01), a 32 MiB cache held ~60 MB.

    A node encoded in more than LARGE_NODE bytes is kept apart, in a list of the
    LARGE_NODES last used, not in the budget: each checkpoint of a Redis group wrote its
    138 KiB image metadata leaf, which the next checkpoint reads again (to replace it), and
    which in the budget pushed ~230 small nodes out of the cache (the volume's, read by
    every FUSE request), while older metadata leaves are never read again."""

    def __init__(self, capacity: int = 50_000, max_bytes: int = 32 << 20, large: int = LARGE_NODES):
        self.capacity, self.max_bytes, self.large = capacity, max_bytes, large
        self.bytes = 0
        self._nodes: OrderedDict[bytes, tuple[_Node, int]] = OrderedDict()
        self._large: OrderedDict[bytes, _Node] = OrderedDict()

    def get(self, store: ChunkStore, cid: ChunkId) -> _Node:
        cached = self._nodes.get(cid)
        if cached is not None:
            self._nodes.move_to_end(cid)
            return cached[0]
        node = self._large.get(cid)
        if node is not None:
            self._large.move_to_end(cid)
            return node
        data = store.get(cid)
        node = decode_node(data, cid)
        self.add(node, len(data))
        return node

    def add(self, node: _Node, size: int) -> None:
        """Keep `node` (clean: its `cid` set), whose encoding is `size` bytes."""
        if size > LARGE_NODE:
            self._large[node.cid] = node
            self._large.move_to_end(node.cid)
            while len(self._large) > self.large:
                self._large.popitem(last=False)
            return
        memory = node_memory(node, size)
        old = self._nodes.pop(node.cid, None)
        self.bytes += memory - (old[1] if old else 0)
        self._nodes[node.cid] = (node, memory)
        while len(self._nodes) > self.capacity or (self.bytes > self.max_bytes and len(self._nodes) > 1):
            self.bytes -= self._nodes.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._nodes) + len(self._large)


class Tree:
    """A COW ordered map bytes -> (value, refs), persisted as NODE chunks."""

    def __init__(self, store: ChunkStore, root: bytes | None = None,
                 cache: NodeCache | None = None, *, leaf_bytes: int | None = None):
        """`leaf_bytes`: a leaf this writer makes or changes is split once its entries pass
        that many bytes (default LEAF_BYTES; readers take leaves of any size: docs/FORMAT.md,
        "Tree nodes")."""
        self._store = store
        self.leaf_bytes = leaf_bytes or LEAF_BYTES
        self._cache = cache if cache is not None else NodeCache(4096)
        self._root: _Node | ChunkId | None = ChunkId(root) if root is not None else None

    # -- reading ------------------------------------------------------------

    def _load(self, ref: "_Node | ChunkId") -> _Node:
        return ref if isinstance(ref, _Node) else self._cache.get(self._store, ref)

    def _leaf_for(self, key: bytes) -> _Node | None:
        if self._root is None:
            return None
        node = self._load(self._root)
        while not node.leaf:
            node = self._load(node.vals[max(bisect_right(node.keys, key) - 1, 0)])
        return node

    def get_entry(self, key: bytes) -> Entry | None:
        leaf = self._leaf_for(key)
        if leaf is None:
            return None
        i = bisect_left(leaf.keys, key)
        if i < len(leaf.keys) and leaf.keys[i] == key:
            return leaf.vals[i]
        return None

    def get(self, key: bytes) -> bytes | None:
        entry = self.get_entry(key)
        return None if entry is None else entry.value

    def __contains__(self, key: bytes) -> bool:
        return self.get_entry(key) is not None

    def entries(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, Entry]]:
        """(key, Entry) in key order for start <= key < end."""
        if self._root is None:
            return iter(())
        return self._walk(self._load(self._root), start, end)

    def _walk(self, node: _Node, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, Entry]]:
        if node.leaf:
            for i in range(bisect_left(node.keys, start), len(node.keys)):
                key = node.keys[i]
                if end is not None and key >= end:
                    return
                yield key, node.vals[i]
            return
        first = max(bisect_right(node.keys, start) - 1, 0)
        for i in range(first, len(node.keys)):
            if end is not None and i > 0 and node.keys[i] >= end:
                return
            yield from self._walk(self._load(node.vals[i]), start, end)

    def items(self, start: bytes = b"", end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in key order for start <= key < end."""
        return ((k, e.value) for k, e in self.entries(start, end))

    def prefix(self, prefix: bytes) -> Iterator[tuple[bytes, Entry]]:
        """(key, Entry) for every key that starts with `prefix`."""
        return self.entries(prefix, _prefix_end(prefix))

    # -- writing ------------------------------------------------------------

    def _own(self, ref: "_Node | ChunkId") -> _Node:
        node = self._load(ref)
        return node.mutable_copy() if node.cid is not None else node

    def put(self, key: bytes, value: bytes, refs: Sequence[bytes] = ()) -> None:
        if len(key) > MAX_KEY:
            raise ValueError(f"tree keys are at most {MAX_KEY} bytes")
        refs = tuple(refs)
        if not set(map(type, refs)) <= _CHUNK_ID_TYPE:    # (bytes(x) copies: ~0.1-0.3 us each)
            refs = tuple(map(bytes, refs))
        entry = Entry(bytes(value), refs)
        if self._root is None:
            self._root = _Node(True, [], [], enc=[])
        root = self._root = self._own(self._root)
        split = self._insert(root, bytes(key), entry)
        if split is not None:
            self._root = _Node(False, [b"", split[0]], [root, split[1]],
                               enc=[_inner_enc(b""), _inner_enc(split[0])])

    def _insert(self, node: _Node, key: bytes, entry: Entry) -> tuple[bytes, _Node] | None:
        if node.leaf:
            i = bisect_left(node.keys, key)
            if i < len(node.keys) and node.keys[i] == key:
                node.size += _entry_size(key, entry) - _entry_size(key, node.vals[i])
                node.vals[i] = entry
                node.enc[i] = _leaf_enc(key, entry)
            else:
                node.keys.insert(i, key)
                node.vals.insert(i, entry)
                node.enc.insert(i, _leaf_enc(key, entry))
                node.size += _entry_size(key, entry)
            if node.size > self.leaf_bytes and len(node.keys) > 1:
                return self._split(node)
            return None
        i = max(bisect_right(node.keys, key) - 1, 0)
        child = node.vals[i] = self._own(node.vals[i])
        split = self._insert(child, key, entry)
        if split is not None:
            node.keys.insert(i + 1, split[0])
            node.vals.insert(i + 1, split[1])
            node.enc.insert(i + 1, _inner_enc(split[0]))
            if len(node.keys) > INTERNAL_FANOUT:
                return self._split(node)
        return None

    @staticmethod
    def _split(node: _Node) -> tuple[bytes, _Node]:
        half = len(node.keys) // 2
        right = _Node(node.leaf, node.keys[half:], node.vals[half:], enc=node.enc[half:])
        del node.keys[half:]
        del node.vals[half:]
        del node.enc[half:]
        if node.leaf:
            right.size = sum(_entry_size(k, e) for k, e in zip(right.keys, right.vals))
            node.size -= right.size
        sep = right.keys[0]
        if not node.leaf:
            right.keys[0] = b""
            right.enc[0] = _inner_enc(b"")
        return sep, right

    def delete(self, key: bytes) -> bool:
        """Remove `key`; False if it was not there."""
        if self.get_entry(key) is None:
            return False
        root = self._root = self._own(self._root)
        self._remove(root, key)
        while not root.leaf and len(root.keys) == 1:
            root = self._root = self._own(root.vals[0])
        if root.leaf and not root.keys:
            self._root = None
        return True

    def _remove(self, node: _Node, key: bytes) -> None:
        if node.leaf:
            i = bisect_left(node.keys, key)
            node.size -= _entry_size(key, node.vals[i])
            del node.keys[i]
            del node.vals[i]
            del node.enc[i]
            return
        i = max(bisect_right(node.keys, key) - 1, 0)
        child = node.vals[i] = self._own(node.vals[i])
        self._remove(child, key)
        if not child.keys and len(node.keys) > 1:
            del node.keys[i]
            del node.vals[i]
            del node.enc[i]
            node.keys[0] = b""
            node.enc[0] = _inner_enc(b"")

    # -- persisting -----------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return isinstance(self._root, _Node) and self._root.cid is None

    def flush(self) -> ChunkId | None:
        """Write every changed node; return the root id (None for an empty tree)."""
        return run_steps(self.flushing())

    def flushing(self) -> Generator[None, None, ChunkId | None]:
        """flush(), a step per node written: yields after each (a caller that serves
        requests answers them between two: a process image's tree writes tens of nodes
        at a checkpoint). The tree must not change until the end; its return value is
        flush()'s."""
        if isinstance(self._root, _Node):
            self._root = yield from self._flush_node(self._root)
        return self._root

    def _flush_node(self, node: _Node) -> Generator[None, None, ChunkId]:
        if node.cid is not None:
            return node.cid
        if not node.leaf:
            vals = node.vals
            for i, child in enumerate(vals):
                if isinstance(child, _Node):
                    vals[i] = yield from self._flush_node(child)
        data = encode_node(node)
        node.cid = self._store.put(data, NODE)
        self._cache.add(node, len(data))
        yield
        return node.cid

    @property
    def root(self) -> ChunkId | None:
        """The root id as of the last flush (flushes first if changed)."""
        return self.flush()

    def copy(self) -> "Tree":
        """An independent tree with the same content: O(1) after a flush."""
        return Tree(self._store, self.flush(), self._cache)

    def __len__(self) -> int:
        return sum(1 for _ in self.entries())

    def changes(self, newer: "Tree") -> Iterator[tuple[bytes, Entry | None, Entry | None]]:
        """(key, entry here, entry in `newer`) for every key whose entry differs, in key
        order (None: the key is not there). A subtree both trees share (the same node)
        is skipped whole, so comparing two versions of one tree (two checkpoints) costs
        O(changed keys x depth), not O(size)."""
        mine, theirs = self._front(), newer._front()
        while mine and theirs:
            (key_a, ref_a, entry_a), (key_b, ref_b, entry_b) = mine[-1], theirs[-1]
            if ref_a is not None and ref_b is not None:
                if _node_id(ref_a) is not None and _node_id(ref_a) == _node_id(ref_b):
                    mine.pop()
                    theirs.pop()
                elif key_a != key_b:
                    (self._expand(mine) if key_a < key_b else newer._expand(theirs))
                else:                  # same low bound: open the taller first, so shared children line up
                    leaf_a, leaf_b = self._load(ref_a).leaf, newer._load(ref_b).leaf
                    if not leaf_a or leaf_b:
                        self._expand(mine)
                    if not leaf_b or leaf_a:
                        newer._expand(theirs)
            elif ref_a is not None:
                if key_a <= key_b:
                    self._expand(mine)
                else:                  # every key left here is above key_b
                    theirs.pop()
                    yield key_b, None, entry_b
            elif ref_b is not None:
                if key_b <= key_a:
                    newer._expand(theirs)
                else:
                    mine.pop()
                    yield key_a, entry_a, None
            elif key_a == key_b:
                mine.pop()
                theirs.pop()
                if entry_a != entry_b:
                    yield key_a, entry_a, entry_b
            elif key_a < key_b:
                mine.pop()
                yield key_a, entry_a, None
            else:
                theirs.pop()
                yield key_b, None, entry_b
        for key, entry in self._drain(mine):
            yield key, entry, None
        for key, entry in newer._drain(theirs):
            yield key, None, entry

    def _front(self) -> list:
        """A stack (next item last) of (low key, node, None) and (key, None, Entry) items."""
        return [] if self._root is None else [(b"", self._root, None)]

    def _expand(self, stack: list) -> None:
        """Replace the node on top of `stack` by its entries or children."""
        low, ref, _ = stack.pop()
        node = self._load(ref)
        if node.leaf:
            stack.extend((key, None, entry) for key, entry in zip(reversed(node.keys), reversed(node.vals)))
        else:
            lows = [low] + node.keys[1:]
            stack.extend((key, child, None) for key, child in zip(reversed(lows), reversed(node.vals)))

    def _drain(self, stack: list) -> Iterator[tuple[bytes, Entry]]:
        while stack:
            if stack[-1][1] is not None:
                self._expand(stack)
            else:
                key, _, entry = stack.pop()
                yield key, entry

    def check(self, checked: set | None = None) -> list[str]:
        """Tree invariants (ordering, separators, node decoding) as problem strings.
        `checked`: the (node id, low, high) of the subtrees checked already, by this call
        or an earlier one given the same set, which skips them: the trees of a store's
        checkpoints share most of their nodes, and a subtree's problems within the same
        bounds are the same wherever it hangs."""
        problems: list[str] = []
        if self._root is not None:
            self._check(self._root, b"", None, problems, set() if checked is None else checked)
        return problems

    def _check(self, ref, low: bytes, high: bytes | None, problems: list[str], checked: set) -> None:
        cid = _node_id(ref)
        if cid is not None:
            if (cid, low, high) in checked:
                return
            checked.add((cid, low, high))
        try:
            node = self._load(ref)
        except Exception as exc:  # a missing or corrupt node: report and go on
            problems.append(str(exc))
            return
        where = f"node {node.cid.hex()}" if node.cid else "dirty node"
        if node.keys != sorted(node.keys) or len(set(node.keys)) != len(node.keys):
            problems.append(f"{where}: keys out of order")
        for i, key in enumerate(node.keys):
            if (node.leaf or i > 0) and (key < low or (high is not None and key >= high)):
                problems.append(f"{where}: key {key!r} outside its parent's range")
        if not node.leaf:
            bounds = [low] + node.keys[1:] + [high]
            for i, child in enumerate(node.vals):
                self._check(child, bounds[i], bounds[i + 1], problems, checked)


Done = TypeVar("Done")


def run_steps(steps: Generator[None, None, Done]) -> Done:
    """Run a generator of steps (Tree.flushing) to its end, at once; what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def _node_id(ref: "_Node | ChunkId") -> ChunkId | None:
    """The chunk id of a node reference (None for a node changed since its last flush)."""
    return ref.cid if isinstance(ref, _Node) else ref


def _prefix_end(prefix: bytes) -> bytes | None:
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class IntTree:
    """A Tree with unsigned 64-bit integer keys (inode tables, block and page maps)."""

    def __init__(self, tree: Tree):
        self.tree = tree

    @staticmethod
    def key(n: int) -> bytes:
        return n.to_bytes(8, "big")

    def get(self, n: int) -> bytes | None:
        return self.tree.get(self.key(n))

    def get_entry(self, n: int) -> Entry | None:
        return self.tree.get_entry(self.key(n))

    def put(self, n: int, value: bytes, refs: Sequence[bytes] = ()) -> None:
        self.tree.put(self.key(n), value, refs)

    def delete(self, n: int) -> bool:
        return self.tree.delete(self.key(n))

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Entry]]:
        stop = None if end is None else self.key(end)
        return ((int.from_bytes(k, "big"), e) for k, e in self.tree.entries(self.key(start), stop))

    def items(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        return ((n, e.value) for n, e in self.entries(start, end))

    def flush(self) -> ChunkId | None:
        return self.tree.flush()
