"""Explicit pruning (`sls gc --keep-last/--keep-within/--forget`): what is dropped, what
always stays, and that a refused request changes nothing."""
from __future__ import annotations

import os

import pytest

from objectstore import NotFound, Store, StoreError
from objectstore.retention import Prune, kept_by_rules, parse_duration


def commit_files(store: Store, rounds: int, size: int = 50000) -> dict[int, bytes]:
    """One new random file per commit; returns each commit's file contents."""
    vol = store.volume("v") if "v" in store.volumes() else store.create_volume("v")
    written = {}
    for r in range(rounds):
        data = os.urandom(size)
        vol.put(b"file", b"f", [store.put(data)])
        written[store.commit(f"round {r}").id] = data
    return written


def content(store: Store, commit_id: int) -> bytes:
    entry = store.tree(store.commit_by_id(commit_id).roots["vol/v"]).get_entry(b"file")
    return store.get(entry.refs[0])


def test_keep_last_drops_unnamed_history_and_frees_its_space(store_dir):
    store = Store.init(store_dir)
    try:
        store.packs.pack_limit = 64 << 10
        written = commit_files(store, 12)
        store.tag("named", 3)
        disk_before = store.packs.disk_bytes()
        plain = store.gc()                       # the default policy keeps all 12 (newest 100)
        assert plain["commits_after"] == plain["commits_before"]
        figures = store.gc(prune=Prune(keep_last=2))
        assert [c.id for c in store.log()] == [12, 11, 3]
        assert figures["commits_after"] == 3 and figures["bytes_freed"] > 0
        assert store.packs.disk_bytes() < disk_before / 2
        assert figures["names_forgotten"] == []
        assert store.fsck() == []
        store.close()
        store = Store.open(store_dir)
        assert [c.id for c in store.log()] == [12, 11, 3] and store.tags() == {"named": 3}
        for cid in (12, 11, 3):
            assert content(store, cid) == written[cid]
    finally:
        store.close()


def test_forget_by_name_untags_and_drops_it(store):
    commit_files(store, 4, size=100)
    store.tag("old", 2)
    figures = store.gc(prune=Prune(forget=("old", "3")))
    assert figures["names_forgotten"] == ["old"]
    assert store.tags() == {}
    assert [c.id for c in store.log()] == [4, 1]   # the store's policy keeps the rest
    assert store.fsck() == []


@pytest.mark.parametrize("forget, error, says", [
    ("2", StoreError, "named keep-me; named checkpoints are dropped only by name: --forget keep-me"),
    ("4", StoreError, "is the newest one"),
    ("99", NotFound, "no checkpoint 99"),
    ("nosuchname", NotFound, "no checkpoint is named 'nosuchname'"),
    ("3", StoreError, "still in use"),
])
def test_a_refused_forget_says_why_and_changes_nothing(store, forget, error, says):
    commit_files(store, 4, size=100)
    store.tag("keep-me", 2)
    before = [c.id for c in store.log()]
    with pytest.raises(error, match=says):
        store.gc(prune=Prune(keep_last=1, forget=(forget,)), also_keep=lambda _kept: {3})
    assert [c.id for c in store.log()] == before and store.tags() == {"keep-me": 2}


def test_the_newest_and_what_the_caller_needs_always_stay(store):
    commit_files(store, 6, size=100)
    store.gc(prune=Prune(keep_last=1), also_keep=lambda kept: {2} if 6 in kept else set())
    assert [c.id for c in store.log()] == [6, 2]


def test_keep_rules_add_up():
    commits = [(i, 1000.0 + 10 * i) for i in range(1, 11)]     # ids 1..10, times 1010..1100
    assert kept_by_rules(commits, Prune(keep_last=3), now=2000.0) == {8, 9, 10}
    assert kept_by_rules(commits, Prune(keep_within=25.0), now=1100.0) == {8, 9, 10}
    assert kept_by_rules(commits, Prune(keep_last=1, keep_within=45.0), now=1100.0) == {6, 7, 8, 9, 10}
    assert kept_by_rules(commits, Prune(forget=("3",)), now=1100.0) == set()


def test_bad_prune_requests_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="keep at least 1"):
        Prune(keep_last=0)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("3 days")
    assert parse_duration("1d12h") == 36 * 3600 and parse_duration("90") == 90
    assert Prune.from_json(Prune(2, 60.0, ("a",)).to_json()) == Prune(2, 60.0, ("a",))
