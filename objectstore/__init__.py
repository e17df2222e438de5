"""objectstore: the copy-on-write object store under every file, snapshot and process image.

Public API (see each module's docstring for the why)::

    store = Store.init(path) / Store.open(path, readonly=False)
    cid = store.put(data); store.get(cid); store.has(cid)          # chunks (dedup, lz4)
    cids = store.put_many(datas); store.get_many(cids)              # many at once (pages)
    t = store.tree(root=None); t.put(key, value, refs); t.get(key)  # COW trees
    t.get_entry(key).refs; t.items(start, end); t.delete(key); t.flush()
    store.volume(name) / create_volume(name, root) / snapshot(vol, name)   # O(1)
    store.set_root(name, root); store.roots()                        # named roots
    c = store.commit(label, durable=True); store.barrier()           # checkpoints
    store.log(); store.resolve(spec); store.tag(name, id)            # history
    store.hold / release / holders                                   # open refcounts
    store.gc(); store.fsck(); store.stats()                          # maintenance
    objectstore.stream.send(store, commit, out, base=None) / recv(store, inp)

On-disk formats: docs/FORMAT.md.
"""
from .chunks import DATA, NODE, ChunkId, ChunkStore, MemoryChunkStore
from .errors import CorruptChunk, FormatError, NotFound, StoreError, StoreFull, StoreLocked
from .retention import RetentionPolicy
from .store import Commit, Store
from .tree import Entry, IntTree, Tree

__all__ = ["DATA", "NODE", "ChunkId", "ChunkStore", "MemoryChunkStore", "CorruptChunk",
           "FormatError", "NotFound", "StoreError", "StoreFull", "StoreLocked",
           "RetentionPolicy", "Commit", "Store", "Entry", "IntTree", "Tree"]
