"""A checkpoint's pages stored as they are (put_many(..., compress_later=True): FLAG_DEFERRED
records, pack version 3) read back the same, and the garbage collector compresses those
it keeps as it moves them out of their sealed pack, which it compacts for that reason
alone; a crash in the middle of that pass loses nothing, and the next collection
finishes it. A store whose active pack predates version 3 compresses them at once."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from objectstore import RetentionPolicy, Store
from objectstore import pack as fmt
from objectstore import packstore
from objectstore import store as store_module
from objectstore.gc import collect
from tmpfs import tmpfs

REPO = Path(__file__).resolve().parents[2]
OLD_STORE = Path(__file__).parent / "data" / "store-pack-v1"
KEEP_NEWEST = RetentionPolicy(keep_last=1, minutely=0, hourly=0, daily=0)


def text_page(n: int) -> bytes:
    """A 4 KiB page that lz4 shrinks, like a key-value server's heap."""
    return (f"key:{n:08d} value:{'v' * (n % 40)};".encode() * 300)[:4096]


def random_page(n: int) -> bytes:
    return random.Random(n).randbytes(4096)


def heap_page(n: int) -> bytes:
    """A 4 KiB page that lz4 shrinks to ~28%."""
    return (random.Random(n).randbytes(1024) + b"key:%08d value:" % n * 300)[:4096]


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (a nearly full disk)."""
    with tmpfs(tmp_path / "small", "8m") as root:
        yield root


def chunk_records(store_path: Path) -> dict[bytes, fmt.RecordInfo]:
    """chunk id -> its record, over every pack of the store (the newest wins)."""
    out = {}
    for path in sorted((store_path / "packs").glob("pack-*.pack")):
        data = path.read_bytes()
        version = fmt.check_pack_header(data, path.name)[1]
        out.update({r.id: r for r in fmt.scan(data, version=version).records if r.kind in (0, 1)})
    return out


def checkpoint(store: Store, pages: list[bytes], label: str, key: bytes = b"image") -> list[bytes]:
    """Pages stored as an image stores them, named by a key of the volume, committed."""
    vol = store.volume("v") if "v" in store.volumes() else store.create_volume("v")
    ids = store.put_many(pages, compress_later=True)
    vol.put(key, b"", ids)
    store.commit(label)
    return ids


def test_pages_stored_as_they_are_read_back_and_gc_compresses_those_it_keeps(store_dir):
    old, new = [text_page(n) for n in range(40)], [text_page(n) for n in range(100, 140)]
    incompressible = [random_page(n) for n in range(5)]
    with Store.init(store_dir) as store:
        old_ids = checkpoint(store, old, "first")
        store.packs.sync()
        records = chunk_records(store_dir)
        assert all(records[c].flags == fmt.FLAG_DEFERRED and records[c].stored_len == 4096 for c in old_ids)
        assert store.get_many(old_ids) == old and [store.get(c) for c in old_ids] == old
        assert store.stats()["pending_compression_bytes"] >= 40 * 4096
        new_ids = checkpoint(store, new + incompressible, "second")      # the first's pages superseded
        store.retention = KEEP_NEWEST
        store.packs.seal_active()
        result = collect(store)
        assert result["packs_compacted"] >= 1
        assert store.packs.pending_compression() == {}
        assert store.get_many(new_ids) == new + incompressible
    records = chunk_records(store_dir)
    assert not set(old_ids) & set(records)                                # gone, never compressed
    assert all(records[c].flags == fmt.FLAG_LZ4 and records[c].stored_len < 2048 for c in new_ids[:40])
    assert all(records[c].flags == 0 and records[c].stored_len == 4096 for c in new_ids[40:])  # tried once
    with Store.open(store_dir) as store:
        assert store.get_many(new_ids) == new + incompressible
        assert store.packs.pending_compression() == {}
        assert store.fsck() == []


def test_pending_bytes_are_found_again_when_the_store_is_opened(store_dir):
    """The flag is on disk: a store reopened (its packs read through their indexes, or
    the active one scanned) still knows which packs hold pages to compress."""
    with Store.init(store_dir) as store:
        checkpoint(store, [text_page(n) for n in range(10)], "sealed")
        store.packs.seal_active()
        checkpoint(store, [text_page(n) for n in range(10, 13)], "active")
        pending = store.packs.pending_compression()
    assert sorted(pending.values()) == [3 * 4096, 10 * 4096]
    with Store.open(store_dir) as store:
        assert store.packs.pending_compression() == pending


_CRASHING_COLLECTION = textwrap.dedent("""
    import os, signal, sys
    from objectstore import RetentionPolicy, Store
    from objectstore.gc import Collection, Removal
    store = Store.open(sys.argv[1])
    store.retention = RetentionPolicy(keep_last=1, minutely=0, hourly=0, daily=0)
    for step in Collection(store, slice_s=float("inf")).steps():
        if isinstance(step, Removal) and step.files:    # the first pack's kept pages copied, compressed
            if sys.argv[2] == "after-sync":
                step.sync.wait()
            else:
                store.packs._write_out()                 # on disk, not durable
            os.kill(os.getpid(), signal.SIGKILL)
        elif step is not None:                           # its reads and lz4 (a server's worker thread)
            step.run()
""")


@pytest.mark.parametrize("when", ["before-sync", "after-sync"])
def test_a_crash_in_the_middle_of_the_pass_loses_nothing(store_dir, when):
    """Pages kept in the first pack (key a), pages superseded (the second pack's), and
    those that superseded them (the third's): the collection is killed when the first
    pack's pages are copied and compressed, before or after that copy is durable."""
    kept = [text_page(n) for n in range(200)]
    pages = [[text_page(round_ * 1000 + n) for n in range(200)] for round_ in (1, 2)]
    with Store.init(store_dir) as store:
        kept_ids = checkpoint(store, kept, "kept", b"a")
        store.packs.seal_active()
        for round_, batch in enumerate(pages):
            ids = checkpoint(store, batch, f"round {round_}")
            store.packs.seal_active()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _CRASHING_COLLECTION, str(store_dir), when], env=env)
    assert done.returncode == -signal.SIGKILL
    with Store.open(store_dir) as store:
        assert store.get_many(ids) == pages[-1] and store.get_many(kept_ids) == kept
        assert store.fsck() == []
        assert store.packs.pending_compression()                        # not finished
        store.retention = KEEP_NEWEST
        collect(store)
        assert store.packs.pending_compression() == {}
        assert store.get_many(ids) == pages[-1] and store.get_many(kept_ids) == kept
    records = chunk_records(store_dir)
    assert all(records[c].flags == fmt.FLAG_LZ4 for c in ids + kept_ids)


def test_a_store_whose_active_pack_predates_version_3_compresses_pages_at_once(tmp_path):
    path = tmp_path / "store"
    shutil.copytree(OLD_STORE, path)
    pages = [text_page(n) for n in range(8)]
    with Store.open(path) as store:
        ids = checkpoint(store, pages, "in a version 1 pack")
        assert store.packs.pending_compression() == {}
        assert store.get_many(ids) == pages
    records = chunk_records(path)
    assert all(records[c].flags == fmt.FLAG_LZ4 for c in ids)


def test_pages_not_compressed_yet_count_as_a_third_for_when_a_collection_is_due(store_dir, monkeypatch):
    """gc_due weighs pending pages at a third of their size (what lz4 leaves of a heap page),
    so that storing them as they are does not make collections three times as frequent."""
    monkeypatch.setattr(store_module, "GC_MIN_GROWTH", 600 << 10)
    with Store.init(store_dir) as store:
        assert not store.gc_due()                                         # (the baseline)
        checkpoint(store, [text_page(n) for n in range(200)], "800 KiB as they are", b"a")
        store.packs.sync()
        assert store.packs.disk_bytes() > 800 << 10 and not store.gc_due()
        checkpoint(store, [text_page(n) for n in range(1000, 1250)], "1.8 MiB as they are", b"b")
        store.packs.sync()
        assert store.gc_due()


def test_on_a_nearly_full_disk_pages_are_compressed_at_once_not_refused(small_disk):
    """10 MiB of pages (~2.8 MiB compressed) on an 8 MiB disk: stored as they are they
    would not fit. Past a quarter of the room (the pending pages plus the free space),
    put_many compresses them at once, and a collection is due, which compresses those
    kept as they were."""
    rounds = [[heap_page(r * 64 + n) for n in range(64)] for r in range(40)]
    with Store.init(small_disk / "store") as store:
        store.packs.pack_limit = 1 << 20           # (a compaction needs a pack's live bytes free)
        ids = [checkpoint(store, pages, f"round {r}", b"key %d" % r) for r, pages in enumerate(rounds)]
        store.packs.sync()
        pending = store.packs.pending_bytes()
        assert 0 < pending <= 2 << 20
        assert store.gc_due()
        collect(store)
        assert store.packs.pending_bytes() == 0
        assert store.fsck() == []
    with Store.open(small_disk / "store") as store:
        assert [store.get_many(i) for i in ids] == rounds


def test_pages_are_kept_as_they_are_up_to_their_cap_then_compressed_at_once(store_dir, monkeypatch):
    """On a roomy disk the budget is PENDING_CAP (or the live bytes a collection found, if
    more); past it pages are compressed at once and a collection is due."""
    monkeypatch.setattr(packstore, "PENDING_CAP", 400 << 10)
    with Store.init(store_dir) as store:
        checkpoint(store, [heap_page(n) for n in range(60)], "240 KiB", b"a")
        assert store.packs.pending_bytes() == 60 * 4096 and not store.gc_due()
        checkpoint(store, [heap_page(n) for n in range(100, 164)], "256 KiB more", b"b")
        assert store.packs.pending_bytes() == 60 * 4096 and store.gc_due()       # compressed at once
        store.note_collected(live_bytes=1 << 20)                                  # a collection's figure
        checkpoint(store, [heap_page(n) for n in range(200, 264)], "256 KiB more", b"c")
        assert store.packs.pending_bytes() == 124 * 4096 and not store.gc_due()
