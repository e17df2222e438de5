"""A collection in steps, with puts, tree changes and commits between its steps (as a
server runs it): checked against a model of what each commit and the working state hold.

The chunks come from a small pool of contents, so that puts during a collection often
find a chunk that was already stored, and dead when the collection started (referenced
only by commits that its retention forgot): such a dedup hit makes the chunk live
again, and a collection that freed it would leave a tree naming a missing chunk. Packs
are tiny, so that most packs are sealed and compacted while the operations go on.
"""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objectstore import RetentionPolicy, Store
from objectstore.gc import Collection

from objectstore_helpers import DERANDOMIZE, advance

POOL = [random.Random(n).randbytes(700 + 37 * n) for n in range(10)]   # incompressible
KEYS = 6

operations = st.lists(st.one_of(
    st.tuples(st.just("step"), st.integers(1, 8)),
    st.tuples(st.just("put"), st.integers(0, KEYS - 1), st.integers(0, len(POOL) - 1)),
    st.tuples(st.just("put_many"), st.integers(0, KEYS - 1), st.lists(st.integers(0, len(POOL) - 1),
                                                                       min_size=2, max_size=4)),
    st.tuples(st.just("link"), st.integers(0, KEYS - 1), st.integers(0, len(POOL) - 1)),
    st.tuples(st.just("delete"), st.integers(0, KEYS - 1)),
    st.tuples(st.just("commit"), st.booleans()),
), max_size=40)

history_shape = st.lists(st.tuples(st.integers(0, KEYS - 1), st.integers(0, len(POOL) - 1)),
                         min_size=4, max_size=30)


def key(n: int) -> bytes:
    return n.to_bytes(2, "big")


def content_of(store: Store, root: bytes) -> dict[int, bytes]:
    return {int.from_bytes(k, "big"): store.get(entry.refs[0]) for k, entry in store.tree(root).entries()}


def apply(store: Store, model: dict[int, int], op: tuple) -> None:
    """One operation on the working volume "v" and on `model` (key -> pool index)."""
    vol = store.volume("v")
    kind = op[0]
    if kind == "put":
        vol.put(key(op[1]), b"f", [store.put(POOL[op[2]])])
        model[op[1]] = op[2]
    elif kind == "put_many":           # a checkpoint's pages: the first one is named
        ids = store.put_many([POOL[i] for i in op[2]])
        vol.put(key(op[1]), b"f", [ids[0]])
        model[op[1]] = op[2][0]
    elif kind == "link":               # referenced by id when the store says it has it
        cid = store.id_of(POOL[op[2]])
        vol.put(key(op[1]), b"f", [cid if store.has(cid) else store.put(POOL[op[2]])])
        model[op[1]] = op[2]
    elif kind == "delete":
        vol.delete(key(op[1]))
        model.pop(op[1], None)


@settings(max_examples=60, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(history=history_shape, ops=operations)
def test_what_changes_during_a_collection_survives_it(history, ops):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        store = Store.init(path)
        try:
            store.packs.pack_limit = 2048
            store.retention = RetentionPolicy(keep_last=1, minutely=0, hourly=0, daily=0)
            store.create_volume("v")
            model: dict[int, int] = {}
            for k, i in history:       # a history whose older commits the collection forgets
                apply(store, model, ("put", k, i))
                store.commit()
            committed: dict[int, dict[int, int]] = {}    # commits made during the collection
            steps = Collection(store, slice_s=0).steps()
            running = advance(steps, 1)                  # the start
            for op in ops:
                if op[0] == "step":
                    running = running and advance(steps, op[1])
                elif op[0] == "commit":
                    committed[store.commit(durable=op[1]).id] = dict(model)
                else:
                    apply(store, model, op)
            while running:
                running = advance(steps, 100)
            expected = {k: POOL[i] for k, i in model.items()}
            assert content_of(store, store.volume("v").flush()) == expected
            for cid, state in committed.items():
                assert content_of(store, store.commit_by_id(cid).roots["vol/v"]) == \
                    {k: POOL[i] for k, i in state.items()}, f"commit {cid}"
            head = store.commit("after").id
            assert store.fsck() == []
            store.close()
            store = Store.open(path)
            assert content_of(store, store.commit_by_id(head).roots["vol/v"]) == expected
            for cid, state in committed.items():
                assert content_of(store, store.commit_by_id(cid).roots["vol/v"]) == \
                    {k: POOL[i] for k, i in state.items()}
            store.gc()                  # and a collection that starts afterwards keeps them too
            assert content_of(store, store.volume("v").flush()) == expected
            assert store.fsck() == []
        finally:
            store.close()
