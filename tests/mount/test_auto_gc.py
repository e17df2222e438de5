"""A long-running mount gives space back on its own: once the packs have doubled since
the last collection, or grown by a quarter of the disk's free space, a collection is due
(FileSystem.maybe_collect starts one: FileSystem.collect, run here by itself)."""
from __future__ import annotations

import os
import stat

import trio

from objectstore import RetentionPolicy, Store

from mount.filesystem import FileSystem
from mount.volume import Volume
from tmpfs import tmpfs

FILE = stat.S_IFREG | 0o644


def test_a_collection_is_due_once_the_packs_have_doubled_and_gives_space_back(tmp_path, monkeypatch):
    monkeypatch.setattr("objectstore.store.GC_MIN_GROWTH", 1 << 20)
    store = Store.init(tmp_path / "store")
    try:
        store.retention = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=0)
        store.packs.pack_limit = 1 << 20              # small packs: sealed ones can be compacted
        fs = FileSystem(store, "main", checkpoint_interval_ms=None)
        volume = fs.main
        ino = volume.create(volume.root_ino, b"churn", FILE, 0, 0).ino
        fs.checkpoint("created")
        assert not store.gc_due()                     # sets the baseline
        for n in range(48):                           # rewrites: each checkpoint's data is garbage soon
            last = os.urandom(256 * 1024)
            volume.write(ino, 0, last)
            fs.checkpoint(f"rewrite {n}")
        grown = store.packs.disk_bytes()
        fs.apply_retention()
        trio.run(fs.barrier)                          # a mount's periodic one (it seals the full active pack)
        assert store.gc_due()
        trio.run(fs.collect)
        assert not store.gc_due()
        assert len(store.log()) <= 3
        assert store.packs.disk_bytes() < grown / 2
        assert volume.read(ino, 0, len(last)) == last
        assert store.fsck() == []
    finally:
        store.close()


def test_a_store_on_a_disk_short_of_space_collects_before_the_garbage_fills_it(tmp_path):
    """On a disk with less free space than the packs must grow by before a collection is
    due by the doubling rule (GC_MIN_GROWTH), collections come once the packs have grown
    by a quarter of what is free: a file rewritten over and over, four times the disk's
    size in all, with history thinned as it goes, never meets a full disk."""
    with tmpfs(tmp_path / "disk", "48m") as disk:
        store = Store.init(disk / "store")
        try:
            store.retention = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=0)
            fs = FileSystem(store, "main", checkpoint_interval_ms=None)
            volume = fs.main
            ino = volume.create(volume.root_ino, b"churn", FILE, 0, 0).ino
            fs.checkpoint("created")
            collections = 0
            for n in range(192):                      # 192 MiB through a 48 MiB disk
                last = os.urandom(1 << 20)
                volume.write(ino, 0, last)
                fs.checkpoint(f"rewrite {n}")
                fs.apply_retention()
                if store.gc_due():                    # what the daemons ask every few seconds
                    trio.run(fs.barrier)
                    trio.run(fs.collect)
                    collections += 1
            assert collections >= 4
            assert volume.read(ino, 0, len(last)) == last
            assert store.fsck() == []
        finally:
            store.close()


def test_history_that_cannot_fit_the_disk_is_thinned_harder_but_named_checkpoints_stay(tmp_path):
    """A store whose retention keeps more history than its disk holds (the newest 100
    checkpoints of a file rewritten whole, on a disk of 48) thins it harder after each
    collection that leaves the disk short of space, rather than fail the writes: a
    checkpoint named early stays, with its data."""
    with tmpfs(tmp_path / "disk", "48m") as disk:
        store = Store.init(disk / "store")
        try:
            store.retention = RetentionPolicy(keep_last=100)
            fs = FileSystem(store, "main", checkpoint_interval_ms=None)
            volume = fs.main
            ino = volume.create(volume.root_ino, b"churn", FILE, 0, 0).ino
            first = os.urandom(1 << 20)
            volume.write(ino, 0, first)
            store.tag("first", fs.checkpoint("named").id)
            for n in range(192):
                last = os.urandom(1 << 20)
                volume.write(ino, 0, last)
                fs.checkpoint(f"rewrite {n}")
                fs.apply_retention()
                if store.gc_due():
                    trio.run(fs.barrier)
                    trio.run(fs.collect)
            assert store.space_pressure > 0 and len(store.log()) < 50
            assert volume.read(ino, 0, len(last)) == last
            named = store.commit_by_id(store.tags()["first"]).roots["vol/main"]
            assert Volume(store, store.tree(named), "main", readonly=True).read(ino, 0, len(first)) == first
            assert store.fsck() == []
        finally:
            store.close()
