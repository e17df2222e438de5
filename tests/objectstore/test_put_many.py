"""put_many is put, batched: for any sequence of batches, a store fed by put_many holds
byte for byte the packs of a store fed the same chunks by put one at a time (same ids,
same records, same compression choices, same write-outs), and reads them back.

The crash side is in test_store_crash.py (its writer stores every other step's chunks
with put_many) and the whole-Store model (test_store_model.py) has a put_many rule;
this file checks equality, dedup inside a batch, verify-on-dedup, a read-only store,
a batch larger than the write-ahead buffer and the cheap rejection of incompressible
chunks.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from objectstore import DATA, NODE, StoreError
from objectstore import pack as fmt
from objectstore.chunks import chunk_id
from objectstore.packstore import _WRITE_AHEAD, PackStore

from objectstore_helpers import DERANDOMIZE, TempDir, pack_files

SEED = 0x5EED


def page(kind: str, n: int) -> bytes:
    """A 4 KiB page: compressible text, random bytes, half of each, or zeros."""
    if kind == "text":
        return (f"key:{n:012d} value:{'x' * (n % 50)} ".encode() * 200)[:4096]
    if kind == "random":
        return random.Random(n).randbytes(4096)
    if kind == "half":
        return random.Random(n).randbytes(2048) + bytes(2048)
    return bytes(4096)


PAGES = st.tuples(st.sampled_from(["text", "random", "half", "zero"]), st.integers(0, 30)).map(lambda a: page(*a))
CHUNKS = PAGES | st.binary(max_size=200)
BATCHES = st.lists(st.tuples(st.sampled_from([DATA, NODE]), st.lists(CHUNKS, max_size=12)), max_size=6)


def pack_bytes(store_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in pack_files(store_dir)]


def open_pair(base: Path, **options) -> tuple[PackStore, PackStore]:
    """Two empty pack stores with the same seed: one fed by put, one by put_many."""
    for name in ("one", "many"):
        (base / name).mkdir()
    return PackStore(base / "one" / "packs", SEED, **options), PackStore(base / "many" / "packs", SEED, **options)


@settings(max_examples=60, deadline=None, derandomize=DERANDOMIZE)
@given(batches=BATCHES, sync_between=st.booleans(), verify_dedup=st.booleans())
def test_put_many_writes_what_put_writes(batches: list[tuple[int, list[bytes]]], sync_between: bool,
                                         verify_dedup: bool) -> None:
    tmp = TempDir("slsfs-put-many-")
    try:
        one, many = open_pair(tmp.path, verify_dedup=verify_dedup)
        for kind, batch in batches:
            ids = many.put_many(batch, kind)
            assert ids == [one.put(data, kind) for data in batch]
            assert ids == [chunk_id(kind, data, SEED) for data in batch]
            if sync_between:
                one.sync()
                many.sync()
        one.close()
        many.close()
        assert pack_bytes(tmp.path / "one") == pack_bytes(tmp.path / "many")
        reopened = PackStore(tmp.path / "many" / "packs", SEED, readonly=True)
        try:
            for kind, batch in batches:
                assert reopened.get_many([chunk_id(kind, data, SEED) for data in batch]) == batch
        finally:
            reopened.close()
    finally:
        tmp.remove()


def test_a_batch_stores_each_distinct_chunk_once(tmp_path: Path) -> None:
    packs = PackStore(tmp_path / "packs", SEED)
    try:
        a, b = page("text", 1), page("random", 2)
        ids = packs.put_many([a, b, a, a, b])
        assert ids[0] == ids[2] == ids[3] and ids[1] == ids[4] and ids[0] != ids[1]
        assert len(packs) == 2
        assert packs.put_many([b, a]) == [ids[1], ids[0]] and len(packs) == 2   # known: nothing appended
        packs.sync()
        assert packs.get_many(ids) == [a, b, a, a, b]
    finally:
        packs.close()


def test_a_batch_larger_than_the_write_ahead_buffer(tmp_path: Path) -> None:
    """The buffer is written out at the same record boundaries as by one put at a time
    (so a crash leaves the same bytes on disk), and everything reads back."""
    pages = [page("random", n) for n in range(_WRITE_AHEAD // 4096 + 300)]
    one, many = open_pair(tmp_path)
    try:
        assert many.put_many(pages) == [one.put(p) for p in pages]
        on_disk = [p.stat().st_size for p in pack_files(tmp_path / "one")]
        assert on_disk[-1] > _WRITE_AHEAD
        assert [p.stat().st_size for p in pack_files(tmp_path / "many")] == on_disk
        assert many.get_many(many.put_many(pages[::-1])) == pages[::-1]
    finally:
        one.close()
        many.close()
    assert pack_bytes(tmp_path / "one") == pack_bytes(tmp_path / "many")


def test_put_many_into_a_read_only_store_is_refused(tmp_path: Path) -> None:
    PackStore(tmp_path / "packs", SEED).close()
    packs = PackStore(tmp_path / "packs", SEED, readonly=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            packs.put_many([b"page"])
        assert packs.put_many([]) == []
    finally:
        packs.close()


def test_after_an_incompressible_chunk_the_next_is_probed_first(tmp_path: Path) -> None:
    """The cheap rejection's rule: a chunk right after one lz4 could not shrink is
    compressed only if its first bytes shrink; anything else is compressed as before.
    (A half-random page compresses to about half, but its start is random.)"""
    sequence = [("half", 1, True),        # after nothing: lz4 tried in full, pays
                ("random", 2, False),
                ("half", 3, False),       # probed: its start is random, stored as it is
                ("random", 4, False),
                ("text", 5, True),        # probed: its start compresses, so lz4 runs
                ("half", 6, True)]        # the run has ended: tried in full again
    packs = PackStore(tmp_path / "packs", SEED)
    try:
        for kind, n, compressed in sequence:
            packs.put(page(kind, n))
            last = fmt.decode_entries(packs._entries[-fmt.INDEX_ENTRY.size:])[0]   # its index entry
            assert bool(last.flags & fmt.FLAG_LZ4) == compressed, (kind, n)
        packs.sync()
        pages = [page(kind, n) for kind, n, _ in sequence]
        assert packs.get_many([chunk_id(DATA, p, SEED) for p in pages]) == pages
    finally:
        packs.close()


def test_a_chunk_over_what_a_record_holds_is_refused_and_the_store_goes_on(store):
    """The store refuses a chunk no reader would take (over 16 MiB: it was written, then
    read back as a damaged record), with the store left usable."""
    with pytest.raises(StoreError, match="over the"):
        store.put(bytes(fmt.MAX_RECORD + 1))
    cid = store.put(b"still works")
    store.commit("after")
    assert store.get(cid) == b"still works"


def test_appended_bytes_counts_the_records_as_stored(tmp_path: Path) -> None:
    """appended_bytes (bench/groups.py's bytes per page) is what the records take in the
    pack: compressible pages count as lz4 left them, random ones whole, a known page nothing."""
    packs = PackStore(tmp_path / "packs", SEED)
    try:
        before = sum(p.stat().st_size for p in pack_files(tmp_path))
        text, noise = page("text", 3), page("random", 4)
        packs.put_many([text, noise, text, page("zero", 0)])
        packs.put(noise)                                          # known: nothing appended
        packs.sync()
        grown = sum(p.stat().st_size for p in pack_files(tmp_path)) - before
        assert packs.appended_bytes == grown
        assert 3 * fmt.RECORD_OVERHEAD + 4096 < grown < 3 * fmt.RECORD_OVERHEAD + 2 * 4096   # text and zeros shrank
    finally:
        packs.close()
