"""Pack format versions 2 and 3 (xxh3 record checksums) and the version 1 packs written before them.

tests/objectstore/data/store-pack-v1 was written by slsfs before version 2 (main at
dd3bf80): six commits of three chunks each (incompressible, compressible, mixed), the
first three in sealed pack 1 (with its index), the rest in active pack 2. A store like
it must open, read, pass fsck, take new chunks and commits (appended to its active
version 1 pack in that pack's format), and rebuild a lost index; new packs are of the current version (3).
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

from objectstore import Store
from objectstore import pack as fmt
from objectstore.packstore import remove_files

OLD_STORE = Path(__file__).parent / "data" / "store-pack-v1"


def _old_contents() -> list[bytes]:
    """The chunks the old store holds, made again as they were made then."""
    rng = random.Random(1)
    return [data for n in range(6)
            for data in (rng.randbytes(3000), (b"compressible %d " % n) * 300, bytes(100) + rng.randbytes(50))]


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(OLD_STORE, path)
    return path


def _pack_version(path: Path) -> int:
    return fmt.check_pack_header(path.read_bytes(), path.name)[1]


def _records(path: Path) -> list[fmt.RecordInfo]:
    data = path.read_bytes()
    result = fmt.scan(data, version=_pack_version(path))
    assert not result.damaged and result.valid_end == len(data)
    return result.records


def test_a_store_of_version_1_packs_opens_reads_and_checks_clean(tmp_path):
    path = _copy(tmp_path)
    packs = path / "packs"
    assert [_pack_version(p) for p in sorted(packs.glob("*.pack"))] == [1, 1]
    contents = _old_contents()
    with Store.open(path) as store:
        assert [store.get(store.id_of(data)) for data in contents] == contents
        assert store.get_many([store.id_of(data) for data in contents]) == contents
        assert [c.label for c in store.log()][:2] == ["c5", "c4"]
        assert store.fsck() == []


def test_new_records_go_into_the_old_active_pack_in_its_version_and_new_packs_are_the_current_one(tmp_path):
    path = _copy(tmp_path)
    packs = path / "packs"
    rng = random.Random(2)
    added = [rng.randbytes(5000) for _ in range(4)] + [b"squeezable " * 500]
    with Store.open(path) as store:
        for data in added[:3]:
            store.put(data)
        store.commit("after the upgrade")
    assert _pack_version(packs / "pack-00000002.pack") == 1
    assert len(_records(packs / "pack-00000002.pack")) > 3 * 6     # every record valid as version 1
    with Store.open(path) as store:
        store.packs.seal_active()
        for data in added[3:]:
            store.put(data)
        store.commit("in a new pack")
    new_pack = packs / "pack-00000003.pack"
    assert _pack_version(new_pack) == fmt.PACK_VERSION == 3
    assert len(_records(new_pack)) == 3                           # two chunks and the commit
    assert fmt.scan(new_pack.read_bytes(), version=1).records == []   # not xxh32 any more
    (packs / "pack-00000001.idx").unlink()                         # rebuilt from a version 1 scan
    (packs / "pack-00000002.idx").unlink()
    with Store.open(path) as store:
        everything = _old_contents() + added
        assert [store.get(store.id_of(data)) for data in everything] == everything
        assert [c.label for c in store.log()][:2] == ["in a new pack", "after the upgrade"]
        assert store.fsck() == []


def test_fsck_finds_a_damaged_record_in_a_version_1_pack(tmp_path):
    path = _copy(tmp_path)
    pack = path / "packs" / "pack-00000001.pack"
    victim = next(r for r in _records(pack) if r.stored_len > 100)
    data = bytearray(pack.read_bytes())
    data[victim.offset + fmt.RECORD_HEADER.size + 10] ^= 0x55
    pack.write_bytes(bytes(data))
    with Store.open(path) as store:
        assert any(f"offset {victim.offset}" in problem for problem in store.fsck())


def _stored_chunks(paths: list[Path]) -> dict[bytes, tuple[int, int, bytes]]:
    """chunk id -> (flags, raw_len, payload) of every chunk record of these packs."""
    out = {}
    for path in paths:
        data = path.read_bytes()
        result = fmt.scan(data, version=_pack_version(path))
        out.update({info.id: (info.flags, info.raw_len, bytes(payload))
                    for info, payload in fmt.iter_payloads(data, result.records) if info.kind == 0})
    return out


def _moves_everything(store: Store, numbers: set[int]) -> bool:
    """Packs `numbers` compacted as a collection does it, keeping every chunk: copied,
    a fresh catalog, synced, deleted. Whether their files held anything."""
    members: dict[int, list[bytes]] = {}
    store.packs.tally(*store.packs.locations(), set(), {}, {}, members)
    for number in numbers:
        store.packs.move_chunks(number, members.get(number, []), lambda cid: True)
    store.renew_catalog()
    store.packs.sync()
    return sum(remove_files(store.packs.retire_pack(number)) for number in numbers) > 0


def test_compaction_moves_version_1_records_as_stored_into_a_current_version_pack(tmp_path):
    """The garbage collector copies a kept chunk's record as it was stored (compressed
    or not, no lz4 again), checksummed in the active pack's version: every chunk reads
    back the same, before and after a reopen, and fsck is clean."""
    path = _copy(tmp_path)
    packs = path / "packs"
    contents = _old_contents()
    old = _stored_chunks([packs / "pack-00000001.pack", packs / "pack-00000002.pack"])
    assert any(flags & fmt.FLAG_LZ4 for flags, _, _ in old.values())
    assert any(not flags & fmt.FLAG_LZ4 for flags, _, _ in old.values())
    with Store.open(path) as store:
        store.packs.seal_active()
        assert _moves_everything(store, {1, 2})
        assert [c.label for c in store.log()][:2] == ["c5", "c4"]
    assert sorted(p.name for p in packs.glob("*.pack")) == ["pack-00000003.pack"]
    moved = packs / "pack-00000003.pack"
    assert _pack_version(moved) == 3 and fmt.scan(moved.read_bytes(), version=1).records == []
    assert _stored_chunks([moved]) == old
    with Store.open(path) as store:
        assert [store.get(store.id_of(data)) for data in contents] == contents
        assert store.get_many([store.id_of(data) for data in contents]) == contents
        assert [c.label for c in store.log()][:2] == ["c5", "c4"]
        assert store.fsck() == []
