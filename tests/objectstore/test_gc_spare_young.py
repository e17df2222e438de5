"""A server's own collection (spare_young) leaves the youngest packs of pages stored as they
are (FLAG_DEFERRED) for the next one when they are mostly live, within a share of the
pending budget, and only once: the next collection compacts them. An explicit collection
(`sls gc`) spares nothing. Nothing a kept checkpoint names is ever freed either way."""
from __future__ import annotations

import random

import pytest

from objectstore import RetentionPolicy, Store
from objectstore.gc import collect

KEEP_TWO = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=0)
PAGES = 48                 # a checkpoint's pages: ~200 KiB, several packs of 64 KiB


def page(n: int) -> bytes:
    """A 4 KiB page that lz4 shrinks, like a key-value server's heap."""
    return (random.Random(n).randbytes(512) + b"key:%08d value:" % n * 300)[:4096]


def checkpoints(store: Store, count: int) -> dict[int, list[bytes]]:
    """`count` checkpoints, each of PAGES new pages kept as they are (a group's pages); the
    commit id -> its pages."""
    written = {}
    vol = store.create_volume("v")
    for k in range(count):
        pages = [page(k * PAGES + i) for i in range(PAGES)]
        vol.put(b"image", b"", store.put_many(pages, compress_later=True))     # as an image names them
        written[store.commit(f"checkpoint {k}").id] = pages
    store.packs.seal_active()
    return written


@pytest.fixture
def store(tmp_path):
    with Store.init(tmp_path / "store") as opened:
        opened.packs.pack_limit = 64 << 10
        opened.retention = KEEP_TWO
        yield opened


def kept_pages_read_back(store: Store, written: dict[int, list[bytes]]) -> None:
    for commit in store.log():
        for data in written.get(commit.id, []):
            assert store.get(store.id_of(data)) == data


def test_a_servers_collection_spares_the_young_packs_once(store):
    written = checkpoints(store, 5)
    first = collect(store, spare_young=True)
    assert first["packs_spared"] > 0
    spared = set(store.packs.spared)
    assert spared <= set(store.packs.pending_compression())    # left as they were
    kept_pages_read_back(store, written)
    forgotten = [data for cid, pages in written.items() if cid not in {c.id for c in store.log()} for data in pages]
    second = collect(store, spare_young=True)
    assert not spared & set(store.packs.pending_compression())  # compacted by the next one
    assert second["packs_spared"] == 0
    kept_pages_read_back(store, written)
    assert not any(store.has(store.id_of(data)) for data in forgotten)
    assert store.fsck() == []


def test_an_explicit_collection_spares_nothing(store):
    checkpoints(store, 5)
    assert collect(store)["packs_spared"] == 0
    assert store.packs.pending_compression() == {}


def test_a_collection_spares_no_more_than_its_share_of_the_pending_budget(store):
    checkpoints(store, 5)
    store.packs.pending_cap = 64 << 10       # a quarter of it holds none of the 64 KiB packs
    assert collect(store, spare_young=True)["packs_spared"] == 0
    assert store.packs.pending_compression() == {}
