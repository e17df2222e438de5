"""Opening a store reads little: the active pack from its prefix index on, the history
from the newest catalog on. Whatever those shortcuts find damaged or stale, opening
falls back to reading everything and loses nothing."""
from __future__ import annotations

import os
from pathlib import Path

from objectstore import Store
from objectstore import pack as fmt

from objectstore_helpers import flip_byte

CHUNKS = 1500


def fill(store: Store, count: int, start: int = 0) -> list[bytes]:
    ids = [store.put(f"chunk {i} ".encode() * 8) for i in range(start, start + count)]
    store.commit(f"filled {start}..{start + count}")
    return ids


def prefix_index(store_dir: Path) -> Path:
    (found,) = (store_dir / "packs").glob("*.pidx")
    return found


def assert_readable(store_dir: Path, ids: list[bytes], commits: int) -> None:
    with Store.open(store_dir) as store:
        assert [store.get(cid) for cid in ids] == [f"chunk {i} ".encode() * 8 for i in range(len(ids))]
        assert len(store.log()) == commits
        assert store.fsck() == []


def test_the_records_after_the_prefix_index_are_found(store_dir):
    with Store.init(store_dir) as store:
        store.packs.prefix_index_min = 1000
        ids = fill(store, CHUNKS)
        indexed = len(fmt.decode_index(prefix_index(store_dir).read_bytes(), "pidx"))
        ids += fill(store, 20, start=CHUNKS)          # grows by less than half: not re-indexed
        assert len(fmt.decode_index(prefix_index(store_dir).read_bytes(), "pidx")) == indexed
    assert_readable(store_dir, ids, commits=2)


def test_a_damaged_prefix_index_means_a_whole_scan(store_dir):
    with Store.init(store_dir) as store:
        store.packs.prefix_index_min = 1000
        ids = fill(store, CHUNKS)
    flip_byte(prefix_index(store_dir), 100)
    assert_readable(store_dir, ids, commits=1)


def test_a_prefix_index_naming_records_the_pack_lost_is_ignored(store_dir):
    with Store.init(store_dir) as store:
        store.packs.prefix_index_min = 1000
        ids = fill(store, CHUNKS)
    pidx = prefix_index(store_dir)
    last = fmt.decode_index(pidx.read_bytes(), "pidx")[-1]
    pack = pidx.with_suffix(".pack")
    os.truncate(pack, last.offset + 10)              # as if the pack had been cut back
    with Store.open(store_dir) as store:             # opens on what the pack holds
        assert store.get(ids[0]) == b"chunk 0 " * 8
        assert last.id not in store.packs._index


def test_sealing_a_pack_drops_its_prefix_index(store_dir):
    with Store.init(store_dir) as store:
        store.packs.prefix_index_min = 1000
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
    store.packs.prefix_index_min = 100
    store.packs.pack_limit = 20_000
    return store


def test_every_index_written_names_exactly_its_packs_records(store_dir, monkeypatch):
    """The active pack's index entries are encoded once and reused (PackStore._active_index):
    every prefix and sealed index written is still the index of what its pack holds, through
    rollbacks, a reopen and new packs."""
    written: list[tuple[Path, bytes]] = []
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith((".pidx", ".idx")):
            written.append((Path(dst), Path(src).read_bytes()))
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    store = _small_packs(Store.init(store_dir))
    try:
        for round_ in range(12):
            fill(store, 150, start=round_ * 150)
            mark = store.packs.mark()
            store.put(b"rolled back %d" % round_ * 50)
            store.packs.rollback(mark)
            if round_ == 5:
                store.close()
                store = _small_packs(Store.open(store_dir))
    finally:
        store.close()
    monkeypatch.undo()
    with Store.open(store_dir) as store:
        assert store.fsck() == []
    assert {p.suffix for p, _ in written} == {".pidx", ".idx"}
    for path, index in written:
        records = fmt.decode_index(index, path.name)
        in_pack = fmt.scan(path.with_suffix(".pack").read_bytes()).records
        assert records == in_pack[:len(records)]
        if path.suffix == ".idx":
            assert records == in_pack
