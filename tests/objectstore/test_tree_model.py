"""Model-based test of the COW trees: Tree and IntTree against a plain dict.

Runs with the real node sizes and with tiny ones (patched), so that the small
examples hypothesis makes still build trees several levels deep and exercise
splits, empty leaves and root collapse.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

from objectstore import IntTree, Store
from objectstore import tree as tree_module
from objectstore.tree import NodeCache, Tree

from objectstore_helpers import DERANDOMIZE, TempDir

KEYS = st.binary(min_size=0, max_size=6).map(lambda b: b.replace(b"\xff", b"\xfe", 1)) | \
    st.sampled_from([b"", b"a", b"ab", b"b", b"\xff", b"\xff\xff", b"\x00"])
VALUES = st.binary(max_size=80)
REF = st.binary(min_size=16, max_size=16)

SETTINGS = settings(max_examples=40, stateful_step_count=50, deadline=None, derandomize=DERANDOMIZE,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class TreeModel(RuleBasedStateMachine):
    """One live tree and its dict model, plus flushed roots and copies to revisit."""

    saved = Bundle("saved")

    def __init__(self):
        super().__init__()
        self.tmp = TempDir("slsfs-tree-")
        self.store = Store.init(self.tmp.path / "s")
        self.tree = self.store.tree()
        self.model: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}

    def teardown(self):
        try:
            assert self.tree.check() == []
        finally:
            self.store.close()
            self.tmp.remove()

    # -- edits ------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, refs=st.lists(REF, max_size=3))
    def put(self, key, value, refs):
        self.tree.put(key, value, refs)
        self.model[key] = (value, tuple(refs))

    @rule(first=st.integers(0, 2**32), count=st.integers(1, 300), size=st.integers(0, 60))
    def put_many(self, first, count, size):
        for n in range(first, first + count):
            key = n.to_bytes(5, "big")
            value = n.to_bytes(5, "big") * (size // 5 + 1)
            self.tree.put(key, value)
            self.model[key] = (value, ())

    @rule(key=KEYS)
    def delete(self, key):
        assert self.tree.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_existing_run(self, data):
        keys = sorted(self.model)
        i = data.draw(st.integers(0, len(keys) - 1))
        n = data.draw(st.integers(1, 200))
        for key in keys[i:i + n]:
            assert self.tree.delete(key)
            del self.model[key]

    # -- reads --------------------------------------------------------------------

    @rule(key=KEYS)
    def get(self, key):
        expected = self.model.get(key)
        assert self.tree.get(key) == (expected[0] if expected else None)
        entry = self.tree.get_entry(key)
        assert (entry is None) == (expected is None)
        if entry is not None:
            assert (entry.value, tuple(entry.refs)) == expected
        assert (key in self.tree) == (expected is not None)

    @rule(start=KEYS, end=st.none() | KEYS)
    def items_range(self, start, end):
        expected = sorted((k, v[0]) for k, v in self.model.items()
                          if k >= start and (end is None or k < end))
        assert list(self.tree.items(start, end)) == expected

    @rule(prefix=st.binary(max_size=2))
    def prefix(self, prefix):
        expected = sorted(k for k in self.model if k.startswith(prefix))
        assert [k for k, _ in self.tree.prefix(prefix)] == expected

    @invariant()
    def size_and_order(self):
        assert len(self.tree) == len(self.model)

    # -- persistence --------------------------------------------------------------

    @rule(target=saved)
    def flush(self):
        root = self.tree.flush()
        assert self.tree.flush() == root  # flushing a clean tree changes nothing
        assert not self.tree.dirty
        if root is None:
            assert not self.model
        return root, dict(self.model)

    @rule(target=saved)
    def copy_and_diverge(self):
        snapshot = dict(self.model)
        other = self.tree.copy()
        other.put(b"\xff\xffcopy-only", b"x")
        other.delete(next(iter(snapshot), b"none"))
        assert self.tree.get(b"\xff\xffcopy-only") == self.model.get(b"\xff\xffcopy-only", (None,))[0]
        return self.tree.flush(), snapshot

    @rule(saved=saved, sync=st.booleans())
    def reopen_from_root(self, saved, sync):
        root, model = saved
        if sync:
            self.store.packs.sync()
        fresh = Tree(self.store, root, NodeCache(64))  # decode every node from the packs again
        assert list(fresh.entries()) == sorted((k, v) for k, v in model.items())
        assert fresh.check() == []

    @rule(saved=saved)
    def changes_against_saved(self, saved):
        root, model = saved
        older = Tree(self.store, root, NodeCache(64))
        expected = sorted((k, model.get(k), self.model.get(k)) for k in set(model) | set(self.model)
                          if model.get(k) != self.model.get(k))
        as_model = [(k, a and (a.value, tuple(a.refs)), b and (b.value, tuple(b.refs)))
                    for k, a, b in older.changes(self.tree)]
        assert as_model == expected
        assert [(k, b, a) for k, a, b in self.tree.changes(older)] == list(older.changes(self.tree))

    @rule(saved=saved)
    def continue_from_saved(self, saved):
        root, model = saved
        self.tree = self.store.tree(root)
        self.model = dict(model)


@pytest.fixture(params=["real-nodes", "tiny-nodes"])
def node_sizes(request, monkeypatch):
    if request.param == "tiny-nodes":
        monkeypatch.setattr(tree_module, "LEAF_BYTES", 120)
        monkeypatch.setattr(tree_module, "INTERNAL_FANOUT", 3)
    return request.param


def test_tree_matches_dict(node_sizes):
    run_state_machine_as_test(TreeModel, settings=SETTINGS)


INT_OPS = st.lists(st.tuples(st.sampled_from(["put", "delete", "range"]),
                             st.integers(0, 2**64 - 1) | st.integers(0, 300),
                             st.integers(0, 2**64 - 1) | st.integers(0, 300)),
                   max_size=200)


@settings(max_examples=60, deadline=None, derandomize=DERANDOMIZE)
@given(ops=INT_OPS)
def test_int_tree_matches_dict(ops, tmp_path_factory):
    with Store.init(tmp_path_factory.mktemp("int")) as store:
        t = IntTree(store.tree())
        model: dict[int, bytes] = {}
        for op, a, b in ops:
            if op == "put":
                t.put(a, b.to_bytes(8, "little"))
                model[a] = b.to_bytes(8, "little")
            elif op == "delete":
                assert t.delete(a) == (a in model)
                model.pop(a, None)
            else:
                lo, hi = min(a, b), max(a, b)
                assert list(t.items(lo, hi)) == sorted((k, v) for k, v in model.items() if lo <= k < hi)
        assert list(t.items()) == sorted(model.items())
        reopened = IntTree(Tree(store, t.flush(), NodeCache(16)))
        assert list(reopened.items()) == sorted(model.items())
        assert all(reopened.get(k) == v for k, v in model.items())
        assert reopened.tree.check() == []


def test_int_keys_order_numerically(store):
    t = IntTree(store.tree())
    for n in (2**64 - 1, 0, 256, 255, 1, 2**32):
        t.put(n, b"")
    assert [n for n, _ in t.items()] == [0, 1, 255, 256, 2**32, 2**64 - 1]
    with pytest.raises(OverflowError):
        t.put(2**64, b"")


def test_changes_between_versions_read_only_what_differs(store, monkeypatch):
    """Two checkpoints of a large tree that differ in one key: the diff loads a few nodes
    on the changed path, not the tree (what makes `sls diff` O(changes))."""
    t = store.tree()
    for n in range(20_000):
        t.put(n.to_bytes(8, "big"), b"v" * 40)
    old_root = t.flush()
    t.put((12_345).to_bytes(8, "big"), b"changed")
    t.delete((777).to_bytes(8, "big"))
    t.put(b"\xff new", b"added")
    loads = []
    real_get = store.get
    monkeypatch.setattr(store, "get", lambda cid: loads.append(cid) or real_get(cid))
    old, new = Tree(store, old_root, NodeCache(16)), Tree(store, t.flush(), NodeCache(16))
    assert [(k, a and a.value, b and b.value) for k, a, b in old.changes(new)] == [
        ((777).to_bytes(8, "big"), b"v" * 40, None),
        ((12_345).to_bytes(8, "big"), b"v" * 40, b"changed"),
        (b"\xff new", None, b"added")]
    loaded = len(loads)
    leaves = sum(1 for _ in Tree(store, old_root, NodeCache(16)).entries()) * 59 // tree_module.LEAF_BYTES
    assert 0 < loaded < 20 < leaves, (loaded, leaves)


def test_oversized_key_is_refused(store):
    with pytest.raises(ValueError, match="at most"):
        store.tree().put(b"k" * 70000, b"v")


def test_flush_writes_only_changed_path(store, monkeypatch):
    monkeypatch.setattr(tree_module, "LEAF_BYTES", 200)
    monkeypatch.setattr(tree_module, "INTERNAL_FANOUT", 8)
    t = store.tree()
    for n in range(5000):
        t.put(n.to_bytes(4, "big"), b"v" * 20)
    t.flush()
    before = len(store.packs)
    t.put((1234).to_bytes(4, "big"), b"changed")
    t.flush()
    depth = 0
    node = t._load(t._root)
    while not node.leaf:
        depth += 1
        node = t._load(node.vals[0])
    assert len(store.packs) - before == depth + 1  # one new node per level


def test_flushing_writes_a_node_per_step_and_ends_with_the_root_flush_gives(store, monkeypatch):
    """Tree.flushing (a process image's flush, between requests): after each step one more
    node is in the store, and the tree it ends with reads back as flush()'s would."""
    monkeypatch.setattr(tree_module, "LEAF_BYTES", 200)
    monkeypatch.setattr(tree_module, "INTERNAL_FANOUT", 8)
    entries = {n.to_bytes(4, "big"): b"v%d" % n for n in range(2000)}
    t = store.tree()
    for key, value in entries.items():
        t.put(key, value)
    steps = t.flushing()
    written = [len(store.packs)]
    while True:
        try:
            next(steps)
        except StopIteration as end:
            root = end.value
            break
        written.append(len(store.packs))
    assert written == list(range(written[0], written[0] + len(written)))
    assert len(written) > 50
    assert root == t.flush() and dict(store.tree(root).items()) == entries


def test_node_cache_is_bounded_by_bytes_and_reads_evicted_nodes_back(store):
    """A tree of large values (a process image's metadata is KiB to tens of KiB, written
    anew by every checkpoint) keeps the cache within its byte budget; nodes it dropped are
    read back from the packs intact. (Values under tree.LARGE_NODE: larger nodes are kept
    apart, test_node_cache.py.)"""
    cache = NodeCache(capacity=50_000, max_bytes=1 << 20)
    t = Tree(store, None, cache)
    roots, expected = [], {}
    for n in range(200):
        value = bytes([n % 251]) * 12_000
        t.put(b"meta", value)
        t.put(n.to_bytes(4, "big"), b"small %d" % n)
        roots.append(t.flush())
        expected[n] = value
        assert cache.bytes <= cache.max_bytes
    assert len(cache) < 200
    for n in (0, 57, 199):
        old = Tree(store, roots[n], cache)
        assert old.get(b"meta") == expected[n]
        assert old.get(n.to_bytes(4, "big")) == b"small %d" % n
    assert cache.bytes <= cache.max_bytes
