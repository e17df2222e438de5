"""What the mount's checkpoint loop must go on doing besides checkpoints, on a store
that grows: retention thins (and its record reaches the disk with a later barrier,
not an fsync of its own in the loop), a garbage collection starts once one is due, and
retention keeps a checkpoint while the kernel holds an inode of it (counted as lookups
come and go: walking every inode the kernel holds, 100,000 after a big tree was
written, took 0.1-0.4 s of the loop's turn)."""
from __future__ import annotations

import os
import stat

import trio

from objectstore import RetentionPolicy, Store

from mount import filesystem
from mount.filesystem import FileSystem

FILE = stat.S_IFREG | 0o644
THIN = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=0)


def test_the_checkpoint_loop_thins_durably_and_starts_a_collection_when_one_is_due(tmp_path, monkeypatch):
    monkeypatch.setattr(filesystem, "RETENTION_EVERY_S", 0.05)
    monkeypatch.setattr(filesystem, "BARRIER_EVERY_S", 0.05)
    monkeypatch.setattr("objectstore.store.GC_MIN_GROWTH", 4 << 20)
    store = Store.init(tmp_path / "store")
    store.retention = THIN
    store.packs.pack_limit = 1 << 20
    fs = FileSystem(store, "main", checkpoint_interval_ms=5)
    volume = fs.main
    ino = volume.create(volume.root_ino, b"churn", FILE, 0, 0).ino
    fs.checkpoint("created")
    assert not store.gc_due()                     # sets the baseline
    collections, thinnings = [], []
    real_collect, real_retention = fs.collect, fs.apply_retention

    async def counted_collect(*args, **kwargs):
        collections.append(await real_collect(*args, **kwargs))
        return collections[-1]

    def counted_retention() -> int:
        thinnings.append(real_retention())
        return thinnings[-1]

    fs.collect, fs.apply_retention = counted_collect, counted_retention

    async def churn() -> None:
        async with trio.open_nursery() as nursery:
            fs._tasks = nursery                   # where maybe_collect starts its collection
            nursery.start_soon(fs.run_checkpoints)
            with trio.fail_after(30):
                while not collections:
                    volume.write(ino, 0, os.urandom(256 * 1024))
                    await trio.sleep(0.01)
            await trio.sleep(0.2)                 # a retention and a barrier after the last write
            nursery.cancel_scope.cancel()

    try:
        trio.run(churn)
        thinned = [c.id for c in store.log()]
        assert len(thinned) <= THIN.keep_last + 2, thinned
        assert sum(thinnings) > 0                 # retention itself, not only the collection's
        assert collections[0]["bytes_freed"] > 0
        assert store.fsck() == []
    finally:
        store.close()
    reopened = Store.open(tmp_path / "store")
    try:
        assert [c.id for c in reopened.log()] == thinned
    finally:
        reopened.close()


def test_retention_keeps_a_checkpoint_while_the_kernel_holds_an_inode_of_it(tmp_path):
    store = Store.init(tmp_path / "store")
    try:
        store.retention = THIN
        fs = FileSystem(store, "main", checkpoint_interval_ms=None)
        volume = fs.main
        volume.create(volume.root_ino, b"f", FILE, 0, 0)
        in_tree = fs.checkpoint("a file of its fs/ tree looked up").id
        in_meta = fs.checkpoint("its info.json looked up").id
        for n in range(3):
            volume.create(volume.root_ino, f"g{n}".encode(), FILE, 0, 0)
            fs.checkpoint(f"newer {n}")

        def lookup(path: str, name: bytes) -> int:
            return trio.run(fs.ops.lookup, fs.resolve_path(path), name, None).st_ino

        def retained_after_retention() -> set[int]:
            fs.apply_retention()
            return {c.id for c in store.log()}

        file_ino = lookup(f".sls/checkpoints/{in_tree}/fs", b"f")
        assert lookup(f".sls/checkpoints/{in_tree}/fs", b"f") == file_ino     # two references
        info_ino = lookup(f".sls/checkpoints/{in_meta}", b"info.json")
        assert {in_tree, in_meta} <= retained_after_retention()
        trio.run(fs.ops.forget, [(file_ino, 1)])
        assert {in_tree, in_meta} <= retained_after_retention()             # one reference left
        trio.run(fs.ops.forget, [(file_ino, 1), (info_ino, 1)])
        assert not {in_tree, in_meta} & retained_after_retention()
    finally:
        store.close()
