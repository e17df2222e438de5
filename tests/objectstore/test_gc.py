"""Retention, garbage collection, compaction, open refcounts and a full disk."""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from objectstore import RetentionPolicy, Store, StoreFull, StoreLocked
from objectstore.gc import collect
from objectstore.retention import retained


HOUR = 3600.0
DAY = 86400.0


# -- the retention policy -------------------------------------------------------------

def test_keep_last_only():
    policy = RetentionPolicy(keep_last=3, minutely=0, hourly=0, daily=0)
    commits = [(i, 1000.0 + i) for i in range(1, 11)]
    assert retained(commits, [], policy, now=2000.0) == {8, 9, 10}


def test_thinning_by_age_keeps_newest_per_period():
    now = 100 * DAY
    policy = RetentionPolicy(keep_last=2, minutely=0, hourly=3, daily=2)
    # one commit every 10 minutes over the last 3 days
    commits = [(i, now - (432 - i) * 600.0) for i in range(1, 433)]
    keep = retained(commits, [], policy, now)
    assert {431, 432} <= keep
    by_age = {cid: now - t for cid, t in commits}
    hours = {int(by_age[c] // HOUR) for c in keep if by_age[c] < 3 * HOUR}
    assert hours == {0, 1, 2}  # one per hour for the last 3 hours
    for bucket in range(3):  # ...and it is the newest of its hour
        in_bucket = [c for c, _ in commits if int(by_age[c] // HOUR) == bucket]
        assert max(in_bucket) in keep
    days = {int(by_age[c] // DAY) for c in keep}
    assert days == {0, 1}  # daily=2: nothing from the third day
    assert len(keep) <= 2 + 3 + 2


def test_tags_are_kept_forever_and_future_commits_are_kept():
    policy = RetentionPolicy(keep_last=1, minutely=0, hourly=0, daily=1)
    commits = [(1, 0.0), (2, 10.0), (3, 5000 * DAY), (4, 5000 * DAY + 1)]
    keep = retained(commits, [1], policy, now=5000 * DAY + 2)
    assert keep == {1, 4}
    clock_skew = retained([(7, 100.0)], [], RetentionPolicy(keep_last=0, minutely=1, hourly=0, daily=0), now=50.0)
    assert clock_skew == {7}


# -- GC on a real store ---------------------------------------------------------------------

def churn(store: Store, rounds: int, size: int = 20000) -> dict[int, dict[int, bytes]]:
    """Rewrite the same 5 files every round, one commit per round; returns content per commit."""
    vol = store.volume("v") if "v" in store.volumes() else store.create_volume("v")
    history = {}
    rng = random.Random(rounds)
    content: dict[int, bytes] = {}
    for r in range(rounds):
        for key in range(5):
            data = rng.randbytes(size)
            vol.put(key.to_bytes(8, "big"), b"f", [store.put(data)])
            content[key] = data
        history[store.commit(f"round {r}").id] = dict(content)
    return history


def check_commit(store: Store, commit_id: int, content: dict[int, bytes]) -> None:
    vol = store.tree(store.commit_by_id(commit_id).roots["vol/v"])
    got = {int.from_bytes(k, "big"): store.get(e.refs[0]) for k, e in vol.entries()}
    assert got == content


def test_gc_frees_unreachable_and_keeps_everything_reachable(store_dir):
    store = Store.init(store_dir)
    try:
        store.packs.pack_limit = 64 << 10
        store.retention = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=0)
        history = churn(store, 20)
        store.tag("keep-me", 5)
        old_chunk = next(iter(store.tree(store.commit_by_id(3).roots["vol/v"]).entries()))[1].refs[0]
        records_before = {c.id: c for c in store.log()}
        disk_before = store.packs.disk_bytes()
        stats = store.gc()
        assert stats["commits_after"] == 3 and stats["packs_compacted"] > 0 and stats["bytes_freed"] > 0
        assert store.packs.disk_bytes() < disk_before / 3
        assert [c.id for c in store.log()] == [20, 19, 5]
        for c in store.log():
            assert c == records_before[c.id]  # a commit is never rewritten
            check_commit(store, c.id, history[c.id])
        assert not store.has(old_chunk)  # thinned commit 3's data is gone
        assert store.fsck() == []
        store.close()
        store = Store.open(store_dir)  # and all of it survives a reopen
        assert [c.id for c in store.log()] == [20, 19, 5] and store.tags() == {"keep-me": 5}
        for c in store.log():
            assert c == records_before[c.id]
            check_commit(store, c.id, history[c.id])
        assert store.fsck() == []
        assert store.commit("after gc").id == 21  # ids are never reused
    finally:
        store.close()


def test_gc_keeps_working_state_and_trees_in_use(store):
    store.packs.pack_limit = 16 << 10
    store.retention = RetentionPolicy(keep_last=1, minutely=0, hourly=0, daily=0)
    churn(store, 3)
    loose = store.put(b"put but not yet referenced by any commit" * 100)
    uncommitted = store.tree()
    uncommitted.put(b"k", b"v", [store.put(b"referenced by a tree in use" * 100)])
    store.volume("v").put(b"new", b"x", [store.put(b"working state only" * 100)])
    for _ in range(3):  # seal a few packs so they are candidates
        store.put(os.urandom(20000))
        store.packs.seal_active()
    store.gc()
    assert store.get(loose) == b"put but not yet referenced by any commit" * 100
    assert store.get(uncommitted.get_entry(b"k").refs[0]) == b"referenced by a tree in use" * 100
    assert store.get(store.volume("v").get_entry(b"new").refs[0]) == b"working state only" * 100
    assert store.fsck() == []


def test_gc_with_a_fake_clock_thins_old_checkpoints(store):
    store.retention = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=3)
    churn(store, 6, size=100)
    now = store.head.time + 10 * DAY  # all six are from the same (old) day
    stats = collect(store, now=now)
    assert stats["commits_after"] == 2  # keep_last (the daily tier keeps the newest, already kept)
    assert [c.id for c in store.log()] == [6, 5]


def test_open_refcounts_persist_and_release(store_dir):
    with Store.init(store_dir) as store:
        store.create_volume("v")
        store.hold("v", 42, "pid 100 fd 3")
        store.hold("v", 42, "pid 101 fd 4")
        store.hold("v", 7, "pid 100 fd 5")
        store.commit("held")
        store.hold("v", 8, "not committed")
        store.packs.sync = lambda: None  # die without syncing: the last hold is lost
    with Store.open(store_dir) as store:
        assert store.holders("v") == {42: {"pid 100 fd 3", "pid 101 fd 4"}, 7: {"pid 100 fd 5"}}
        assert store.holders("other") == {}
        store.gc()
        assert store.release("v", 42, "pid 100 fd 3") is False
        assert store.release("v", 42, "pid 101 fd 4") is True
        assert store.release("v", 42, "pid 101 fd 4") is True  # releasing twice is harmless
        store.commit("released")
    with Store.open(store_dir) as store:
        assert store.holders("v") == {7: {"pid 100 fd 5"}}
        assert store.fsck() == []


# -- a full disk ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 3 MiB tmpfs, unmounted whatever happens."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_gives_store_full_and_loses_nothing(small_disk):
    path = small_disk / "store"
    ballast = small_disk / "ballast"
    ballast.write_bytes(os.urandom(512 << 10))
    store = Store.init(path)
    store.packs.pack_limit = 256 << 10
    vol = store.create_volume("v")
    written: dict[int, bytes] = {}
    committed: dict[int, bytes] = {}
    with pytest.raises(StoreFull, match="full"):
        for n in range(1000):  # far more than fits
            data = os.urandom(100 << 10)
            vol.put(n.to_bytes(8, "big"), b"f", [store.put(data)])
            written[n] = data
            store.commit(f"{n}")
            committed = dict(written)
    head = store.head
    assert head.label == str(len(committed) - 1)
    with pytest.raises(StoreFull):
        store.close()  # the unsynced tail cannot be written either; the lock is released
    with Store.open(path) as store:
        assert store.head.id == head.id
        assert store.fsck() == []
        vol = store.volume("v")
        assert {int.from_bytes(k, "big"): store.get(e.refs[0]) for k, e in vol.entries()} == committed
        with pytest.raises(StoreFull):
            store.put(os.urandom(100 << 10))
            store.commit("still full")
        ballast.unlink()  # free space: work continues
        store.commit("after freeing space")
        new = store.put(b"more")
        store.volume("v").put(b"more", b"f", [new])
        store.commit("and more")
        assert store.fsck() == []
    with Store.open(path) as store:
        assert store.head.label == "and more"
        assert store.fsck() == []


def test_gc_is_due_once_the_packs_have_doubled(store, monkeypatch):
    monkeypatch.setattr("objectstore.store.GC_MIN_GROWTH", 1 << 20)
    vol = store.create_volume("v")
    store.commit("empty")
    assert not store.gc_due()                       # the size at the first call is the baseline
    baseline = store.packs.disk_bytes()
    n = 0
    while store.packs.disk_bytes() < max(2 * baseline, baseline + (1 << 20)):
        vol.put(b"k%d" % n, os.urandom(64 * 1024))
        store.commit(f"c{n}")
        n += 1
    assert store.gc_due()
    store.gc()
    assert not store.gc_due()                       # a collection resets the baseline


def test_gc_keeps_what_also_keep_names(store):
    store.retention = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=0)
    vol = store.create_volume("v")
    ids = []
    for n in range(6):
        vol.put(b"k", b"value %d" % n)
        ids.append(store.commit(f"c{n}").id)
    store.gc(also_keep=lambda keep: {ids[0]} if ids[-1] in keep else set())
    left = {c.id for c in store.log()}
    assert left == {ids[0], ids[-2], ids[-1]}
    assert store.tree(store.commit_by_id(ids[0]).roots["vol/v"]).get(b"k") == b"value 0"


def test_tally_in_slices_gives_each_packs_sums_and_members(store):
    """PackStore.tally over slices of locations() (a collection's steps, chunks put between
    them) gives per pack what the chunks' own locations add up to: stored bytes, live
    stored bytes and member ids, and counts the chunks not live."""
    rng = random.Random(3)
    ids = []
    for _ in range(6):                                # packs of runs of chunks, some put twice
        ids += store.packs.put_many([rng.randbytes(rng.randrange(1, 3000)) for _ in range(50)] + [b"same"])
        ids += [store.put(rng.randbytes(500)) for _ in range(7)]
        store.packs.seal_active()
    live = set(rng.sample(ids, 120))
    expected_total: dict[int, int] = {}
    expected_alive: dict[int, int] = {}
    expected_members: dict[int, set[bytes]] = {}
    for cid, number, stored_len, _kind in store.packs.chunk_locations():
        expected_total[number] = expected_total.get(number, 0) + stored_len
        expected_alive[number] = expected_alive.get(number, 0) + stored_len * (cid in live)
        expected_members.setdefault(number, set()).add(cid)
    assert len(expected_total) > 5
    chunks, locs = store.packs.locations()
    total: dict[int, int] = {}
    alive: dict[int, int] = {}
    members: dict[int, list[bytes]] = {}
    dead = 0
    for at in range(0, len(chunks), 37):
        dead += store.packs.tally(chunks[at:at + 37], locs[at:at + 37], live, total, alive, members)
        store.put(rng.randbytes(700))                 # a checkpoint between two steps
    assert dead == len(set(ids)) - len(live)
    assert total == expected_total
    assert {n: a for n, a in alive.items() if a} == {n: a for n, a in expected_alive.items() if a}
    assert {n: set(m) for n, m in members.items()} == expected_members
    assert sum(map(len, members.values())) == len(chunks)


def test_a_store_opens_on_a_full_disk_though_its_lock_record_cannot_be_written(small_disk):
    """The writer's "PID FD" record in STORE/lock is informational: on a disk with no
    room for it (its lock file empty, as an older slsfs left it) the store opens all the
    same, and its lock file stays empty (readers then ask /proc/locks)."""
    path = small_disk / "store"
    Store.init(path).close()
    os.truncate(path / "lock", 0)
    ballast = os.open(small_disk / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="No space"):
            while True:
                os.write(ballast, b"\0" * 4096)
    finally:
        os.close(ballast)
    with Store.open(path) as store:
        assert (path / "lock").read_bytes() == b""
        assert store.path == path
        with pytest.raises(StoreLocked):              # it is the store's one writer all the same
            Store.open(path)
