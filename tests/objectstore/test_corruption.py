"""Corruption: flipped bytes and truncations in packs, pack indexes, commit records
and the FORMAT file are detected with errors that name the pack and offset; fsck
lists them; nothing wrong is ever returned; the store still opens where it can.

Damage inside the *last* record of the active pack is told from a torn write by
the record being all there: it is cut (so the store works on) but its bytes are
kept beside the pack and fsck reports them. Known limit: if the damage makes that
record's length field point past the end of the file, it looks torn and is cut.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest

from objectstore import CorruptChunk, FormatError, NotFound, Store, StoreError
from objectstore import pack as fmt

from objectstore_helpers import flip_byte, pack_files

COMPRESSIBLE = b"compressible " * 400
INCOMPRESSIBLE = random.Random(1).randbytes(5000)


def records(path: Path) -> list[fmt.RecordInfo]:
    return fmt.scan(path.read_bytes()).records


def record_of(path: Path, cid: bytes) -> fmt.RecordInfo:
    return next(r for r in records(path) if r.id == cid)


def build(path: Path, *, seal: bool) -> dict:
    """A store with chunks, a volume and three commits, then more records after them."""
    with Store.init(path) as store:
        ids = {"compressible": store.put(COMPRESSIBLE), "incompressible": store.put(INCOMPRESSIBLE)}
        vol = store.create_volume("v")
        for n in range(3):
            cid = store.put(f"file {n} ".encode() * 50)
            vol.put(n.to_bytes(8, "big"), b"f", [cid])
            ids[f"file{n}"] = cid
            store.commit(f"c{n + 1}")
        if seal:
            store.packs.seal_active()
        ids["after"] = store.put(b"written after the commits " * 10)
        store.commit("c4")
    return ids


def assert_reads_right_or_raise(path: Path, ids: dict) -> None:
    expected = {"compressible": COMPRESSIBLE, "incompressible": INCOMPRESSIBLE,
                "after": b"written after the commits " * 10}
    expected.update({f"file{n}": f"file {n} ".encode() * 50 for n in range(3)})
    with Store.open(path, readonly=True) as store:
        for name, cid in ids.items():
            try:
                assert store.get(cid) == expected[name]
            except (CorruptChunk, NotFound):
                pass


@pytest.mark.parametrize("which", ["compressible", "incompressible"])
@pytest.mark.parametrize("where", ["header", "id", "payload", "checksum"])
@pytest.mark.parametrize("sealed", [True, False], ids=["sealed-pack", "active-pack"])
def test_flipped_chunk_record(store_dir, which, where, sealed):
    ids = build(store_dir, seal=sealed)
    pack = pack_files(store_dir)[0]
    rec = record_of(pack, ids[which])
    offset = {"header": rec.offset + 5, "id": rec.offset + 12 + 3,
              "payload": rec.offset + fmt.RECORD_HEADER.size + rec.stored_len // 2,
              "checksum": rec.end - 2}[where]
    flip_byte(pack, offset)
    with Store.open(store_dir) as store:
        if sealed or where in ("payload", "checksum", "header"):
            with pytest.raises(CorruptChunk) as err:
                store.get(ids[which])
            assert err.value.pack == pack.name and err.value.offset == rec.offset
            assert f"{pack.name} offset {rec.offset}" in str(err.value)
            assert f"sls fsck {store_dir}`" in str(err.value)       # the command to run, whole
        else:  # the id in the damaged header is itself wrong: the chunk is simply gone
            with pytest.raises((CorruptChunk, NotFound)):
                store.get(ids[which])
        other = "incompressible" if which == "compressible" else "compressible"
        assert store.get(ids[other]) in (COMPRESSIBLE, INCOMPRESSIBLE)
        assert store.get(ids["after"]) == b"written after the commits " * 10
        problems = store.fsck()
        assert any(f"{pack.name} offset {rec.offset}" in p for p in problems), problems
        assert store.head.label == "c4"


def test_every_flipped_byte_is_detected_or_harmless(tmp_path):
    """Flip bytes all over both packs: each time fsck reports it (or open refuses
    with a clear error), and every read returns the right bytes or raises."""
    clean = tmp_path / "clean"
    ids = build(clean, seal=True)
    rng = random.Random(3)
    targets = []
    for pack in pack_files(clean):
        recs = records(pack)
        last_end = recs[-1].offset if pack == pack_files(clean)[-1] else pack.stat().st_size
        targets += [(pack.name, rng.randrange(0, last_end)) for _ in range(30)]
    for n, (name, offset) in enumerate(targets):
        copy = tmp_path / f"c{n}"
        shutil.copytree(clean, copy)
        flip_byte(copy / "packs" / name, offset)
        try:
            store = Store.open(copy)
        except FormatError as exc:  # the pack header itself
            assert name in str(exc) and offset < fmt.PACK_HEADER.size
            continue
        with store:
            assert store.fsck() != [], f"flip at {name} offset {offset} went unnoticed"
        assert_reads_right_or_raise(copy, ids)
        shutil.rmtree(copy)


def test_damaged_last_record_of_active_pack_is_kept_and_reported(store_dir):
    ids = build(store_dir, seal=False)
    pack = pack_files(store_dir)[-1]
    last = records(pack)[-1]
    assert last.kind == fmt.COMMIT
    original = pack.read_bytes()[last.offset:]
    flip_byte(pack, last.offset + fmt.RECORD_HEADER.size + 3)
    with Store.open(store_dir) as store:
        assert store.head.label == "c3"  # the previous commit, complete
        assert store.get(ids["file2"]) == b"file 2 " * 50
        problems = store.fsck()
        assert any(f"{pack.name} offset {last.offset}" in p and "kept in" in p for p in problems), problems
        store.commit("c5")  # the store works on
    kept = store_dir / "packs" / f"{pack.name}.damaged-tail-at-{last.offset}"
    damaged = bytearray(original)
    damaged[fmt.RECORD_HEADER.size + 3] ^= 0xFF
    assert kept.read_bytes() == bytes(damaged)
    with Store.open(store_dir) as store:  # reported until someone deals with it
        assert any(kept.name in p for p in store.fsck())
        assert store.head.label == "c5"
    kept.unlink()
    with Store.open(store_dir) as store:
        assert store.fsck() == []


def test_torn_last_record_is_cut_silently(store_dir):
    build(store_dir, seal=False)
    pack = pack_files(store_dir)[-1]
    last = records(pack)[-1]
    os.truncate(pack, last.end - 3)
    with Store.open(store_dir) as store:
        assert store.head.label == "c3" and store.fsck() == []
    assert pack.stat().st_size == last.offset


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_pack_index_is_rebuilt(store_dir, damage):
    ids = build(store_dir, seal=True)
    idx = store_dir / "packs" / "pack-00000001.idx"
    if damage == "flip":
        flip_byte(idx, 30)
    elif damage == "truncate":
        os.truncate(idx, idx.stat().st_size - 5)
    else:
        idx.unlink()
    with Store.open(store_dir) as store:
        assert store.get(ids["compressible"]) == COMPRESSIBLE
        assert store.get(ids["file0"]) == b"file 0 " * 50
        assert [c.label for c in store.log()] == ["c4", "c3", "c2", "c1"]
        assert store.fsck() == []
    fmt.decode_index(idx.read_bytes(), idx.name)  # a good index was written again


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed-pack", "active-pack"])
def test_damaged_commit_record(store_dir, sealed):
    build(store_dir, seal=sealed)
    pack = pack_files(store_dir)[0]
    commits = [r for r in records(pack) if r.kind == fmt.COMMIT]
    second = commits[1]
    flip_byte(pack, second.offset + fmt.RECORD_HEADER.size + 10)
    with Store.open(store_dir) as store:  # still opens
        assert [c.label for c in store.log()] == ["c4", "c3", "c1"]
        problems = store.fsck()
        assert any(f"{pack.name} offset {second.offset}" in p for p in problems), problems
        store.commit("c5")  # and still works
    with Store.open(store_dir) as store:
        assert store.head.label == "c5"


def test_truncated_sealed_pack(store_dir):
    ids = build(store_dir, seal=True)
    pack = pack_files(store_dir)[0]
    recs = records(pack)
    cut = recs[len(recs) // 2].offset + 7
    lost = {r.id for r in recs[len(recs) // 2:] if r.kind in (0, 1)}
    os.truncate(pack, cut)
    with Store.open(store_dir) as store:
        for name, cid in ids.items():
            if cid in lost:
                with pytest.raises(CorruptChunk, match=pack.name):
                    store.get(cid)
        problems = store.fsck()
        assert any(pack.name in p and "missing or damaged" in p for p in problems), problems
    assert_reads_right_or_raise(store_dir, ids)


def build_prefix_indexed(path: Path) -> list[int]:
    """A store whose active pack has a prefix index naming its records, and a commit after
    the last one it names; the commit ids, oldest first."""
    with Store.init(path) as store:
        store.packs.prefix_index_step = 2
        vol = store.create_volume("v")
        commits = []
        for n in range(4):
            vol.put(n.to_bytes(8, "big"), b"f", [store.put(f"file {n} ".encode() * 50)])
            commits.append(store.commit(f"c{n + 1}").id)
        return commits


def test_an_active_pack_cut_short_of_its_prefix_index_is_refused_not_rolled_back(store_dir):
    """Records the prefix index names were durable before it named them: a pack without
    them lost them (no crash does that), and opening it as it is would serve an older
    store without a word. The error says so, and how to open it anyway."""
    commits = build_prefix_indexed(store_dir)
    pack = pack_files(store_dir)[-1]
    first_commit = next(r for r in records(pack) if r.kind == fmt.COMMIT)
    os.truncate(pack, first_commit.end)
    for readonly in (True, False):        # (`sls fsck` opens it read-only)
        with pytest.raises(StoreError, match=f"{pack.name} is {first_commit.end} bytes, but its prefix index"):
            Store.open(store_dir, readonly=readonly)
    assert os.path.getsize(pack) == first_commit.end and pack.with_suffix(".pidx").exists()   # nothing cut
    pack.with_suffix(".pidx").unlink()     # as the error says: the pack taken as it is
    with Store.open(store_dir) as store:
        assert store.head.id == commits[0] and store.fsck() == []


@pytest.mark.parametrize("which", ["active", "sealed"])
def test_a_pack_lost_beside_its_index_is_refused_not_skipped(store_dir, which):
    build_prefix_indexed(store_dir)
    if which == "sealed":
        with Store.open(store_dir) as store:
            store.packs.seal_active()
    pack = pack_files(store_dir)[0]
    index = pack.with_suffix(".pidx" if which == "active" else ".idx")
    assert index.exists()
    pack.unlink()
    with pytest.raises(StoreError, match=f"{pack.name} is missing, but its index {index.name} is there"):
        Store.open(store_dir, readonly=True)
    index.unlink()                          # as the error says: the store without it
    with Store.open(store_dir) as store:
        assert store.head is None or store.fsck() != []


def test_forged_record_with_valid_checksum(store_dir):
    """A record whose checksum matches but whose content is not what its id names."""
    ids = build(store_dir, seal=True)
    pack = pack_files(store_dir)[0]
    rec = record_of(pack, ids["incompressible"])
    data = bytearray(pack.read_bytes())
    body = rec.offset + fmt.RECORD_HEADER.size
    data[body] ^= 0xFF
    struct.pack_into("<I", data, rec.end - 4, fmt.RECORD_CHECKSUM[fmt.PACK_VERSION](bytes(data[rec.offset:rec.end - 4])))
    pack.write_bytes(bytes(data))
    with Store.open(store_dir) as store:
        with pytest.raises(CorruptChunk, match=f"{pack.name} offset {rec.offset}"):
            store.get(ids["incompressible"])
        assert any("does not match" in p and pack.name in p for p in store.fsck())


def test_damaged_tree_node(store_dir):
    build(store_dir, seal=True)
    with Store.open(store_dir) as store:
        root = store.head.roots["vol/v"]
    pack = pack_files(store_dir)[0]
    rec = record_of(pack, root)
    flip_byte(pack, rec.offset + fmt.RECORD_HEADER.size + 2)
    with Store.open(store_dir) as store:
        with pytest.raises(CorruptChunk, match=pack.name):
            list(store.volume("v").items())
        problems = store.fsck()
        assert any("root 'vol/v'" in p and root.hex() in p for p in problems), problems


def test_damaged_format_file(store_dir):
    Store.init(store_dir).close()
    meta = json.loads((store_dir / "FORMAT").read_text())
    (store_dir / "FORMAT").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(FormatError, match="version 99"):
        Store.open(store_dir)
    (store_dir / "FORMAT").write_text("{not json")
    with pytest.raises(FormatError, match="damaged"):
        Store.open(store_dir)


def test_pack_from_a_newer_version_is_refused(store_dir):
    build(store_dir, seal=True)
    pack = pack_files(store_dir)[-1]
    data = bytearray(pack.read_bytes())
    struct.pack_into("<I", data, 8, fmt.PACK_VERSION + 1)
    pack.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="version"):
        Store.open(store_dir)


def test_not_a_store(tmp_path):
    with pytest.raises(NotFound, match="not a slsfs store"):
        Store.open(tmp_path)
    (tmp_path / "x").write_text("")
    with pytest.raises(StoreError, match="not an empty directory"):
        Store.init(tmp_path)


def test_fsck_tells_how_far_it_is_in_words(store_dir):
    build(store_dir, seal=True)
    told: list[str] = []
    with Store.open(store_dir, readonly=True) as store:
        assert store.fsck(progress=told.append) == []
        commits = len(list(store.log()))
    packs = [line for line in told if line.startswith("checking packs: ")]
    assert len(packs) == len(pack_files(store_dir)) and packs[-1].endswith("(100%)"), told
    assert told[-1] == f"checking the checkpoints' trees: {commits} of {commits}", told
