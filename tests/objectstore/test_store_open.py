"""Opening a store reads little: the active pack from its prefix index on, the history
from the newest catalog on. Whatever those shortcuts find damaged or stale, opening
falls back to reading everything and loses nothing (but a pack shorter than its prefix
index says has lost records made durable, which no crash does: opening refuses it, as
test_corruption checks)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings, strategies as st

from objectstore import NotFound, Store, StoreError
from objectstore import pack as fmt
from objectstore.packstore import PackStore

from objectstore_helpers import DERANDOMIZE, TempDir, flip_byte

CHUNKS = 1500


def fill(store: Store, count: int, start: int = 0) -> list[bytes]:
    ids = [store.put(f"chunk {i} ".encode() * 8) for i in range(start, start + count)]
    store.commit(f"filled {start}..{start + count}")
    return ids


def prefix_index(store_dir: Path) -> Path:
    (found,) = (store_dir / "packs").glob("*.pidx")
    return found


def named_end(prefix: Path) -> int:
    """Where the last record a prefix index names ends, as opening reads it (0: none)."""
    try:
        named = named_by(prefix)
    except StoreError:
        return 0
    return named[-1].end if named else 0


def named_by(index: Path, data: bytes | None = None) -> list[fmt.RecordInfo]:
    """The records a pack's index or prefix index (its bytes `data`, default: as on disk) names."""
    data = index.read_bytes() if data is None else data
    if index.suffix == ".pidx":
        return fmt.decode_entries(fmt.read_prefix_index(data, index.name)[0])
    return fmt.decode_index(data, index.name)


def assert_readable(store_dir: Path, ids: list[bytes], commits: int) -> None:
    with Store.open(store_dir) as store:
        assert [store.get(cid) for cid in ids] == [f"chunk {i} ".encode() * 8 for i in range(len(ids))]
        assert len(store.log()) == commits
        assert store.fsck() == []


def test_the_records_after_the_prefix_index_are_found(store_dir):
    with Store.init(store_dir) as store:
        store.packs.prefix_index_step = 1000
        ids = fill(store, CHUNKS)
        indexed = len(named_by(prefix_index(store_dir)))
        ids += fill(store, 20, start=CHUNKS)          # fewer new records than a segment's: not named yet
        assert len(named_by(prefix_index(store_dir))) == indexed
    assert_readable(store_dir, ids, commits=2)


def test_a_damaged_prefix_index_means_a_whole_scan(store_dir):
    with Store.init(store_dir) as store:
        store.packs.prefix_index_step = 1000
        ids = fill(store, CHUNKS)
    flip_byte(prefix_index(store_dir), 100)
    assert_readable(store_dir, ids, commits=1)


def test_sealing_a_pack_drops_its_prefix_index(store_dir):
    with Store.init(store_dir) as store:
        store.packs.prefix_index_step = 1000
        ids = fill(store, CHUNKS)
        assert prefix_index(store_dir).exists()
        store.packs.seal_active()
        assert not list((store_dir / "packs").glob("*.pidx"))
    assert_readable(store_dir, ids, commits=1)


def test_history_is_read_from_the_newest_catalog_on(store_dir):
    with Store.init(store_dir) as store:
        for i in range(12):
            store.commit(f"c{i}")
        store.tag("kept", 3)
        store.forget({10, 11})
        store.commit("after the catalog")
        store.tag("late")
        before = [(c.id, c.label, c.roots) for c in store.log()], store.tags()
    with Store.open(store_dir) as store:
        assert ([(c.id, c.label, c.roots) for c in store.log()], store.tags()) == before
        assert [c.id for c in store.log()] == [13, 12, 11, 10, 3]


def test_a_catalog_without_its_commits_reads_the_whole_history(store_dir):
    """Stores written before catalogs held their commits: every record is read."""
    with Store.init(store_dir) as store:
        for i in range(6):
            store.commit(f"c{i}")
        store.packs.append_meta(fmt.CATALOG, b'{"v":1,"type":"catalog","upto":6,"live":[5,6],"tags":{}}')
        store.packs.sync()
        store.commit("after")
    with Store.open(store_dir) as store:
        assert [c.id for c in store.log()] == [7, 6, 5]
        assert store.log()[-1].label == "c4"


def _small_packs(store: Store) -> Store:
    store.packs.prefix_index_step = 100
    store.packs.pack_limit = 20_000
    return store


def test_every_index_written_names_exactly_its_packs_records(store_dir):
    """The active pack's index entries are encoded once and reused (PackStore._active_index):
    every prefix and sealed index written is still the index of what its pack holds, through
    rollbacks (of records encoded as they were appended), a reopen and new
    packs."""
    written: list[tuple[Path, bytes]] = []
    store = _small_packs(Store.init(store_dir))
    try:
        for round_ in range(12):
            fill(store, 150, start=round_ * 150)
            mark = store.packs.mark()
            store.put(b"rolled back %d" % round_ * 50)
            if round_ % 2:
                store.packs.index_ahead()
            store.packs.rollback(mark)
            written += [(p, p.read_bytes()) for p in sorted((store_dir / "packs").glob("*idx"))]
            if round_ == 5:
                store.close()
                store = _small_packs(Store.open(store_dir))
    finally:
        store.close()
    with Store.open(store_dir) as store:
        assert store.fsck() == []
    assert {p.suffix for p, _ in written} == {".pidx", ".idx"}
    for path, index in written:
        records = named_by(path, index)
        in_pack = fmt.scan(path.with_suffix(".pack").read_bytes()).records
        if path.suffix == ".idx":     # all of them, sorted by id (then kind, flags, offset: the entry's bytes)
            assert records == sorted(in_pack, key=lambda r: fmt.encode_index_entries([r]))
        else:
            assert records and records == in_pack[:len(records)]


SEED = 0x5EED


@settings(max_examples=int(os.environ.get("SLSFS_MODEL_EXAMPLES", "150")), deadline=None,
          derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=12), min_size=1, max_size=12),
       step=st.integers(1, 6), pack_cut=st.floats(0, 1), pidx_cut=st.floats(0, 1) | st.none(),
       pidx_flip=st.floats(0, 1) | st.none())
def test_opening_finds_every_record_whatever_was_cut_from_the_pack_or_its_prefix_index(
        batches, step, pack_cut, pidx_cut, pidx_flip):
    """The active pack is written in synced batches, so that its prefix index grows by
    segments; then the pack is cut anywhere (a torn tail), and the prefix index cut or
    damaged anywhere. Opening (read-only, then to write) finds exactly the chunks whose
    records the pack still holds whole, cuts the rest, and names them again in a
    prefix index that the next opening reads."""
    tmp = TempDir("slsfs-pidx-")
    try:
        directory = tmp.path / "packs"
        packs = PackStore(directory, SEED)
        packs.prefix_index_step = step
        written: list[tuple[bytes, bytes]] = []
        for n, sizes in enumerate(batches):
            datas = [(b"%d:%d:" % (n, i)) * size for i, size in enumerate(sizes)]
            written += zip(packs.put_many(datas), datas)
            packs.sync()
        packs.close()
        (pack,) = directory.glob("*.pack")
        pidx = pack.with_suffix(".pidx")
        records = fmt.scan(pack.read_bytes()).records
        cut = fmt.PACK_HEADER.size + int(pack_cut * (pack.stat().st_size - fmt.PACK_HEADER.size))
        os.truncate(pack, cut)
        if pidx.exists() and pidx_cut is not None:
            os.truncate(pidx, int(pidx_cut * pidx.stat().st_size))
        if pidx.exists() and pidx.stat().st_size and pidx_flip is not None:
            flip_byte(pidx, int(pidx_flip * (pidx.stat().st_size - 1)))
        if pidx.exists() and cut < named_end(pidx):    # records made durable lost: not a torn tail
            with pytest.raises(StoreError, match="lost records that had been made durable"):
                PackStore(directory, SEED, readonly=True)
            pidx.unlink()                              # as the error says, to open the pack as it is
        whole = {r.id for r in records if r.end <= cut}
        expected = {cid: data for cid, data in written if cid in whole}
        size = max([fmt.PACK_HEADER.size] + [r.end for r in records if r.end <= cut])
        for n, readonly in enumerate((True, False, False)):
            opened = PackStore(directory, SEED, readonly=readonly)
            try:
                assert set(opened.ids()) == set(expected)
                assert opened.get_many(list(expected)) == list(expected.values())
                if readonly:                           # (it cuts no torn tail)
                    continue
                assert pack.stat().st_size == size
                assert opened.verify_all() == []
                opened.prefix_index_step = step        # a chunk more, named with the others
                data = b"after opening %d" % n
                expected[opened.put(data)] = data
                opened.sync()
                size = os.path.getsize(pack)
            finally:
                opened.close()
            in_pack = fmt.scan(pack.read_bytes()).records
            named = named_by(pidx) if pidx.exists() else []
            assert named == in_pack[:len(named)] and len(in_pack) - len(named) < step
    finally:
        tmp.remove()


def test_a_stale_prefix_index_whose_last_offset_holds_another_record_is_ignored(store_dir):
    """A prefix index left from before a torn tail was cut (its removal lost with the
    directory's unsynced change) while new records were written where the cut ones were:
    its last entry's offset holds a valid record again, but not the one it names."""
    with Store.init(store_dir) as store:
        store.packs.prefix_index_step = 1000
        ids = fill(store, CHUNKS)
    pidx = prefix_index(store_dir)
    stale = pidx.read_bytes()
    last = named_by(pidx)[-1]                                # (the commit)
    os.truncate(pidx.with_suffix(".pack"), last.offset)     # the last record named, cut
    pidx.unlink()              # (opening refuses a pack shorter than its prefix index: test_corruption)
    with Store.open(store_dir) as store:
        ids += fill(store, 20, start=CHUNKS)                 # written from that offset on
    pidx.write_bytes(stale)
    with Store.open(store_dir, readonly=True) as store:
        assert store.packs.damage == [] and store.head.label == f"filled {CHUNKS}..{CHUNKS + 20}"
    assert_readable(store_dir, ids, commits=1)


def test_a_store_is_opened_without_indexing_its_chunks_until_many_are_used(store_dir):
    """Opening reads the history at once but indexes the chunks (~1.4 us each) only when
    one is stored or many are read: `sls restore` asks the roots (an image or a group?),
    a lazy restore reads its image's tree and then the pages its processes fault on."""
    with Store.init(store_dir) as store:
        ids = fill(store, CHUNKS)
        store.packs.seal_active()
        ids += fill(store, 20, start=CHUNKS)
    for readonly in (True, False):
        with Store.open(store_dir, readonly=readonly) as store:
            assert [c.label for c in store.log()] == [f"filled {CHUNKS}..{CHUNKS + 20}", f"filled 0..{CHUNKS}"]
            assert store.get(ids[-1]) == f"chunk {CHUNKS + 19} ".encode() * 8         # the active pack's
            assert store.get(ids[0]) == b"chunk 0 " * 8                                 # a sealed pack's
            assert store.get_many(ids[5:8]) == [f"chunk {i} ".encode() * 8 for i in range(5, 8)]
            assert store.packs._chunks == {}
            assert len(store.get_many(ids)) == len(ids)
            assert len(store.packs._chunks) == len(ids)
    assert_readable(store_dir, ids, commits=2)


def _packs_of_every_kind(store_dir: Path) -> list[bytes]:
    """A store of sealed packs (sorted indexes; the first one's rewritten as version 1,
    in pack order, as stores made before 2026-12-04 hold them) and an active pack; the
    ids of its chunks, the i-th holding fill()'s i-th content."""
    ids: list[bytes] = []
    with _small_packs(Store.init(store_dir)) as store:
        for round_ in range(10):
            ids += fill(store, 150, start=round_ * 150)
    first = store_dir / "packs" / "pack-00000001.idx"
    records = fmt.scan(first.with_suffix(".pack").read_bytes()).records
    body = fmt.INDEX_HEADER.pack(fmt.INDEX_MAGIC, 1, len(records)) + fmt.encode_index_entries(records)
    first.write_bytes(body + fmt.INDEX_TRAILER.pack(xxhash.xxh64(body).intdigest()))
    assert len(list((store_dir / "packs").glob("*.idx"))) >= 3
    return ids


@settings(max_examples=25, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(st.just("index"), st.integers(0, 1499), st.binary(min_size=1, max_size=40),
                                st.lists(st.integers(0, 1499), min_size=2, max_size=40)), max_size=60))
def test_chunks_are_found_and_stored_while_the_index_is_built_a_step_at_a_time(tmp_path, steps):
    """Between index_some steps (a lazy restore's page server builds the index so), every
    chunk is found: in the sealed packs (sorted indexes, and a version 1 one in pack
    order), in the active pack (its entries in pack order), in the part already indexed,
    and among those put meanwhile (a put looks its chunk up first, and of a stored chunk
    appends nothing); an absent one is not; get_many finds them by look-ups until those would
    have paid for the index, then builds it. Model: step i (an int) reads fill()'s i-th
    content, a list of them reads those at once, bytes are put."""
    template, store_dir = tmp_path / "template", tmp_path / "store"
    if not template.exists():
        (tmp_path / "ids").write_bytes(b"".join(_packs_of_every_kind(template)))
    raw = (tmp_path / "ids").read_bytes()
    contents = {raw[at:at + 16]: f"chunk {at // 16} ".encode() * 8 for at in range(0, len(raw), 16)}
    ids = list(contents)
    shutil.rmtree(store_dir, ignore_errors=True)
    shutil.copytree(template, store_dir)
    with Store.open(store_dir) as store:
        store.packs.index_step = 70
        for step in steps:
            if step == "index":
                store.index_some()
            elif isinstance(step, int):
                assert store.get(ids[step]) == contents[ids[step]]
            elif isinstance(step, list):
                assert store.get_many([ids[i] for i in step]) == [contents[ids[i]] for i in step]
            else:
                data = contents[ids[len(step) * 37]] if len(step) % 3 == 0 else step   # (some stored already)
                size = store.packs.mark()
                cid = store.put(data)
                assert store.packs.mark() == size + (data not in contents.values())
                contents[cid] = data
        store.commit("puts")
        with pytest.raises(NotFound):
            store.get(bytes(16))
        assert not store.has(bytes(16))
        assert {cid: store.get(cid) for cid in contents} == contents
        assert len(store.get_many(list(contents))) == len(contents)      # (the whole index)
        assert {cid: store.get(cid) for cid in contents} == contents
        assert store.fsck() == []
