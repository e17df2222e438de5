"""Model-based test of the whole Store against plain dicts.

Random chunk puts (one by one and in batches), volume edits, clones, snapshots,
named roots, commits (durable or not), barriers, tags, open refcounts, GC under a tight
retention policy and close + reopen (clean, or dropping what was never synced); after every step the reads it makes agree with the model. Packs
are sealed every KiB so that GC really compacts and reopening reads indexes (and
the active pack's prefix index).
SLSFS_MODEL_EXAMPLES raises the number of examples (default 150).
"""
from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pytest

from objectstore import NotFound, RetentionPolicy, Store, StoreError, StoreLocked

from objectstore_helpers import DERANDOMIZE, TempDir

VOLUMES = st.sampled_from(["a", "b", "c"])
NAMES = st.sampled_from(["x", "y", "z"])
KEYS = st.integers(0, 40)
DATA = st.binary(max_size=600) | st.sampled_from([b"", b"same"]) | st.integers(3000, 9000).map(lambda n: b"z" * n)
KEEP_LAST = 3
PACK_LIMIT = 1024


class State:
    """What the store's working state must look like."""

    def __init__(self):
        self.volumes: dict[str, dict[int, tuple[bytes, bytes]]] = {}  # vol -> key -> (chunk id, data)
        self.roots: dict[str, dict[int, tuple[bytes, bytes]]] = {}    # snap/x, img/x -> content
        self.holders: dict[tuple[str, int], set[str]] = {}


class StoreModel(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        self.tmp = TempDir("slsfs-model-")
        self.path = self.tmp.path / "store"
        self.store = Store.init(self.path)
        self._tune()
        self.state = State()
        self.commits: dict[int, tuple[str, State]] = {}
        self.durable: set[int] = set()
        self.tags: dict[str, int] = {}
        self.loose: dict[bytes, bytes] = {}  # chunks put since the last commit, kept by GC

    def _tune(self):
        self.store.packs.pack_limit = PACK_LIMIT
        self.store.packs.prefix_index_step = 2       # so that reopening reads prefix indexes too
        self.store.retention = RetentionPolicy(keep_last=KEEP_LAST, minutely=0, hourly=0, daily=0)

    def teardown(self):
        try:
            assert self.store.fsck() == []
        finally:
            self.store.close()
            self.tmp.remove()

    # -- helpers -------------------------------------------------------------------

    def _check_tree(self, root, content):
        if root is None:
            assert not content
            return
        entries = list(self.store.tree(root).entries())
        assert [k for k, _ in entries] == [k.to_bytes(8, "big") for k in sorted(content)]
        for key, entry in entries:
            cid, data = content[int.from_bytes(key, "big")]
            assert entry.value == b"file:" + cid and entry.refs == (cid,)
            assert self.store.get(cid) == data

    # -- chunks --------------------------------------------------------------------

    @rule(data=DATA)
    def put_loose_chunk(self, data):
        cid = self.store.put(data)
        assert self.store.has(cid) and self.store.get(cid) == data
        assert self.store.put(data) == cid  # dedup: same content, same id
        self.loose[cid] = data

    @rule(datas=st.lists(DATA, max_size=8))
    def put_many_loose_chunks(self, datas):
        cids = self.store.put_many(datas)
        assert cids == [self.store.id_of(d) for d in datas]
        assert self.store.get_many(cids) == datas
        self.loose.update(zip(cids, datas))

    # -- volumes ---------------------------------------------------------------------

    @precondition(lambda self: len(self.state.volumes) < 3)
    @rule(name=VOLUMES)
    def create_volume(self, name):
        if name in self.state.volumes:
            with pytest.raises(StoreError, match="already exists"):
                self.store.create_volume(name)
            return
        self.store.create_volume(name)
        self.state.volumes[name] = {}

    @rule(src=VOLUMES, dst=VOLUMES)
    def clone_volume(self, src, dst):
        if src not in self.state.volumes or dst in self.state.volumes:
            return
        root = self.store.volume(src).flush()
        clone = self.store.create_volume(dst, root)
        self.state.volumes[dst] = dict(self.state.volumes[src])
        clone.put(IntKey(999), b"clone-only")  # diverge, then undo: the source must not see it
        assert self.store.volume(src).get(IntKey(999)) is None
        clone.delete(IntKey(999))

    @rule(name=VOLUMES)
    def drop_volume(self, name):
        if name not in self.state.volumes:
            with pytest.raises(NotFound):
                self.store.drop_volume(name)
            return
        self.store.drop_volume(name)
        del self.state.volumes[name]

    @rule(name=VOLUMES, key=KEYS, data=DATA)
    def write_file(self, name, key, data):
        if name not in self.state.volumes:
            return
        cid = self.store.put(data)
        self.store.volume(name).put(IntKey(key), b"file:" + cid, [cid])
        self.state.volumes[name][key] = (cid, data)

    @rule(name=VOLUMES, key=KEYS)
    def delete_file(self, name, key):
        if name not in self.state.volumes:
            return
        assert self.store.volume(name).delete(IntKey(key)) == (key in self.state.volumes[name])
        self.state.volumes[name].pop(key, None)

    @rule(name=VOLUMES, key=KEYS)
    def read_file(self, name, key):
        if name not in self.state.volumes:
            with pytest.raises(NotFound):
                self.store.volume(name)
            return
        entry = self.store.volume(name).get_entry(IntKey(key))
        expected = self.state.volumes[name].get(key)
        if expected is None:
            assert entry is None
        else:
            assert entry.refs == (expected[0],) and self.store.get(entry.refs[0]) == expected[1]

    # -- named roots -----------------------------------------------------------------

    @rule(vol=VOLUMES, name=NAMES)
    def snapshot(self, vol, name):
        if vol not in self.state.volumes:
            return
        if "snap/" + name in self.state.roots:
            with pytest.raises(StoreError, match="already exists"):
                self.store.snapshot(vol, name)
            return
        self.store.snapshot(vol, name)
        self.state.roots["snap/" + name] = dict(self.state.volumes[vol])

    @rule(vol=VOLUMES, name=NAMES)
    def set_root(self, vol, name):
        if vol not in self.state.volumes:
            return
        self.store.set_root("img/" + name, self.store.volume(vol).flush() or self.store.empty_root())
        self.state.roots["img/" + name] = dict(self.state.volumes[vol])

    @rule(name=NAMES)
    def remove_root(self, name):
        self.store.set_root("img/" + name, None)
        self.state.roots.pop("img/" + name, None)

    # -- open refcounts ------------------------------------------------------------------

    @rule(vol=VOLUMES, ino=st.integers(1, 4), holder=st.sampled_from(["p1:3", "p2:7"]))
    def hold(self, vol, ino, holder):
        self.store.hold(vol, ino, holder)
        self.state.holders.setdefault((vol, ino), set()).add(holder)

    @rule(vol=VOLUMES, ino=st.integers(1, 4), holder=st.sampled_from(["p1:3", "p2:7"]))
    def release(self, vol, ino, holder):
        held = self.state.holders.get((vol, ino), set())
        held.discard(holder)
        assert self.store.release(vol, ino, holder) == (not held)
        if not held:
            self.state.holders.pop((vol, ino), None)

    # -- commits -----------------------------------------------------------------------

    @rule(label=st.sampled_from(["", "cp", "ünïcode"]), durable=st.booleans())
    def commit(self, label, durable):
        c = self.store.commit(label, durable=durable)
        assert c.id not in self.commits and all(c.id > i for i in self.commits)
        assert c.label == label and c.parent == (max(self.commits) if self.commits else None)
        self.commits[c.id] = (label, copy.deepcopy(self.state))
        if durable:
            self.durable.update(self.commits)
            assert self.store.durable_id == c.id
        self.loose.clear()

    @rule()
    def barrier(self):
        assert self.store.barrier() == max(self.commits, default=0)
        self.durable.update(self.commits)

    @precondition(lambda self: self.commits)
    @rule(name=NAMES, data=st.data())
    def tag(self, name, data):
        cid = data.draw(st.sampled_from(sorted(self.commits)))
        self.store.tag(name, cid)  # a tag record is durable, and so is everything before it
        self.tags[name] = cid
        self.durable.update(self.commits)
        assert self.store.resolve(name).id == cid

    @precondition(lambda self: self.commits)
    @rule(data=st.data())
    def check_commit(self, data):
        cid = data.draw(st.sampled_from(sorted(self.commits)))
        label, state = self.commits[cid]
        c = self.store.resolve(cid)
        assert c.label == label and self.store.resolve(str(cid)) == c
        newest = sorted(self.commits, reverse=True)
        assert self.store.resolve("latest").id == newest[0]
        assert self.store.resolve(f"latest~{newest.index(cid)}").id == cid
        assert sorted(n[4:] for n in c.roots if n.startswith("vol/")) == sorted(state.volumes)
        for name, content in state.volumes.items():
            self._check_tree(c.roots["vol/" + name], content)
        for name, content in state.roots.items():
            self._check_tree(c.roots[name], content)

    # -- maintenance -----------------------------------------------------------------------

    @rule()
    def gc(self):
        stats = self.store.gc()  # GC writes a durable catalog record: every commit before it is durable
        self.durable.update(self.commits)
        event(f"gc compacted packs: {stats['packs_compacted'] > 0}")
        newest = sorted(self.commits, reverse=True)[:KEEP_LAST]
        keep = set(newest) | set(self.tags.values())
        self.commits = {i: v for i, v in self.commits.items() if i in keep}

    @rule()
    def second_opener(self):
        with pytest.raises(StoreLocked):
            Store.open(self.path)
        with Store.open(self.path, readonly=True) as view:  # sees exactly what is on disk
            durable = {i for i in self.commits if i in self.durable}
            assert [c.id for c in view.log()] == sorted(durable, reverse=True)
            if durable:
                head = max(durable)
                assert view.head.roots == self.store.commit_by_id(head).roots
                for name, content in self.commits[head][1].volumes.items():
                    tree = view.tree(view.head.roots["vol/" + name])
                    assert [int.from_bytes(k, "big") for k, _ in tree.items()] == sorted(content)

    @rule(clean=st.booleans())
    def reopen(self, clean):
        if clean:
            self.store.close()
        else:  # drop the store without close(): only what was durable may survive
            self.store.packs.sync = lambda: None  # simulate a process that died before syncing
            self.store.close()
            lost = set(self.commits) - self.durable
            self.commits = {i: v for i, v in self.commits.items() if i not in lost}
            self.tags = {n: i for n, i in self.tags.items() if i not in lost}
        self.store = Store.open(self.path)
        self._tune()
        self.durable = set(self.commits)
        head = max(self.commits, default=None)
        self.state = copy.deepcopy(self.commits[head][1]) if head else State()
        self.loose.clear()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def history_agrees(self):
        assert [c.id for c in self.store.log()] == sorted(self.commits, reverse=True)
        assert self.store.tags() == {n: i for n, i in self.tags.items() if i in self.commits}
        assert self.store.volumes() == sorted(self.state.volumes)

    @invariant()
    def working_state_agrees(self):
        roots = self.store.roots()
        assert {n for n in roots if n.startswith(("snap/", "img/"))} == set(self.state.roots)
        for name, content in self.state.volumes.items():
            self._check_tree(roots["vol/" + name], content)
        for name, content in self.state.roots.items():
            self._check_tree(roots[name], content)
        for (vol, ino), held in self.state.holders.items():
            assert self.store.holders(vol).get(ino) == held
        for cid, data in self.loose.items():
            assert self.store.get(cid) == data


def IntKey(n: int) -> bytes:
    return n.to_bytes(8, "big")


StoreModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("SLSFS_MODEL_EXAMPLES", 150)), stateful_step_count=60, deadline=None,
    derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
TestStoreModel = StoreModel.TestCase
