"""The tree node cache: what it counts is the memory its nodes take, and the large leaves
a checkpoint writes (a process image's metadata) do not push the small nodes out."""
from __future__ import annotations

import os
import tracemalloc

from objectstore import Store
from objectstore.tree import LARGE_NODE, LARGE_NODES, NodeCache, Tree


def _fill(tree: Tree) -> None:
    """Entries of the kinds slsfs stores: inode records, directory entries, page blocks."""
    for n in range(600):
        tree.put(b"I" + n.to_bytes(8, "big"), os.urandom(60))
        tree.put(b"D" + os.urandom(12) + b"file-%d" % n, os.urandom(10))
    for n in range(60):
        tree.put(b"P" + n.to_bytes(8, "big"), os.urandom(8 + 64 * 16), [os.urandom(16) for _ in range(64)])


def _counting_gets(store: Store) -> list[bytes]:
    """Make `store` list every chunk read from it (the cache's misses)."""
    reads: list[bytes] = []
    real_get = store.get

    def get(cid: bytes) -> bytes:
        reads.append(cid)
        return real_get(cid)
    store.get = get            # type: ignore[method-assign]
    return reads


def test_the_cache_counts_the_memory_its_nodes_take(store: Store):
    tree = Tree(store, None, NodeCache())
    _fill(tree)
    root = tree.flush()
    cache = NodeCache()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert sum(1 for _ in Tree(store, root, cache).entries()) == 1260   # every node decoded into the cache
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.75 * taken <= cache.bytes <= 1.33 * taken, (cache.bytes, taken)


def test_large_leaves_written_again_and_again_leave_small_nodes_cached(store: Store):
    cache = NodeCache(max_bytes=4 << 20)
    small = Tree(store, None, cache)
    _fill(small)
    small_root = small.flush()
    image = Tree(store, None, cache)
    for n in range(100):                 # a checkpoint's image metadata, 10x a second
        image.put(b"meta", os.urandom(LARGE_NODE * 6))
        image.put(b"pages/" + n.to_bytes(8, "big"), os.urandom(1032))
        image.flush()
    reads = _counting_gets(store)
    assert sum(1 for _ in Tree(store, small_root, cache).entries()) == 1260
    assert reads == []                   # the volume's nodes were still cached
    image.put(b"meta", b"the next checkpoint's")   # replaces the newest large leaf: not read back
    image.flush()
    assert reads == []
    assert len(cache._large) <= LARGE_NODES


def test_a_large_node_dropped_from_the_cache_is_read_back_intact(store: Store):
    cache = NodeCache()
    tree = Tree(store, None, cache)
    roots, values = [], []
    for n in range(LARGE_NODES + 3):
        values.append(os.urandom(LARGE_NODE * 2) + b"%d" % n)
        tree.put(b"meta", values[-1])
        roots.append(tree.flush())
    reads = _counting_gets(store)
    assert Tree(store, roots[0], cache).get(b"meta") == values[0]
    assert len(reads) == 1               # it was no longer cached: read from the packs
