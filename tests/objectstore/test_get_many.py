"""Store.get_many (the batched read restore uses): the same bytes as get() for every mix
of chunks (compressed or not, data or tree nodes, repeated, in sealed packs, in the
active pack, still only in its write buffer), in the order asked; a missing chunk is
NotFound and a damaged record is CorruptChunk naming the pack, as with get()."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from objectstore import NODE, CorruptChunk, NotFound, Store
from objectstore import pack as fmt

from objectstore_helpers import flip_byte, pack_files


def contents(n: int) -> list[bytes]:
    rng = random.Random(n)
    pages = []
    for i in range(n):
        if i % 3 == 0:
            pages.append(rng.randbytes(4096))                              # stored plain
        else:
            pages.append(i.to_bytes(8, "little") + bytes(4088))            # lz4-compressed
    return pages


def test_get_many_matches_get_across_packs_and_buffer(store: Store) -> None:
    sealed = contents(300)
    ids = [store.put(p) for p in sealed]
    store.commit("first")
    store.packs.seal_active()
    synced = [b"synced %d " % i * 40 for i in range(50)]
    ids += [store.put(p) for p in synced]
    store.commit("second")
    buffered = [b"only in the write buffer %d" % i * 30 for i in range(20)]
    ids += [store.put(p) for p in buffered]                               # not written out yet
    node = store.put(b"L\x01\x00\x00\x00\x00", NODE)
    wanted = ids + [node] + ids[::7] + [ids[5]] * 3                       # repeats, out of order
    got = store.get_many(wanted)
    assert got == [store.get(c) for c in wanted]
    assert got[:len(ids)] == sealed + synced + buffered
    assert store.get_many([]) == []


def test_get_many_after_reopen(store_dir: Path) -> None:
    pages = contents(200)
    with Store.init(store_dir) as store:
        ids = [store.put(p) for p in pages]
        store.commit("c")
    with Store.open(store_dir, readonly=True) as store:
        shuffled = list(range(len(ids)))
        random.Random(2).shuffle(shuffled)
        assert store.get_many([ids[i] for i in shuffled]) == [pages[i] for i in shuffled]


def test_get_many_missing_chunk(store: Store) -> None:
    cid = store.put(b"here")
    with pytest.raises(NotFound, match="not in the store"):
        store.get_many([cid, bytes(16)])


@pytest.mark.parametrize("sealed", [False, True], ids=["active-pack", "sealed-pack"])
@pytest.mark.parametrize("where", ["payload", "header", "checksum"])
def test_get_many_damaged_record(store_dir: Path, where: str, sealed: bool) -> None:
    """Damage found by the checks get_many makes raises get()'s error. Only a flipped
    record checksum over intact content, in a sealed pack (not scanned on open), is
    not an error for get_many: the content it returns is checked by its 128-bit id."""
    pages = contents(30)
    with Store.init(store_dir) as store:
        ids = [store.put(p) for p in pages]
        store.commit("c")
        if sealed:
            store.packs.seal_active()
            store.put(b"in the next pack")
            store.commit("d")
    path = pack_files(store_dir)[0]
    victim = next(r for r in fmt.scan(path.read_bytes()).records if r.id == ids[4])  # a compressed page
    offset = {"payload": victim.offset + fmt.RECORD_HEADER.size + victim.stored_len // 2,
              "header": victim.offset + 6,                                          # raw_len
              "checksum": victim.offset + fmt.RECORD_HEADER.size + victim.stored_len}[where]
    flip_byte(path, offset)
    with Store.open(store_dir, readonly=True) as store:
        with pytest.raises(CorruptChunk) as single:
            store.get(ids[4])
        assert path.name in str(single.value)
        if sealed and where == "checksum":
            assert store.get_many(ids) == pages
        else:
            with pytest.raises(CorruptChunk) as batched:
                store.get_many(ids)
            assert str(batched.value) == str(single.value)
        others = ids[:4] + ids[5:]
        assert store.get_many(others) == pages[:4] + pages[5:]


def test_get_many_far_apart_and_dense_records(store: Store) -> None:
    """Records further apart than one read spans (several MiB of other chunks between)
    and dense runs of small records in the same call."""
    rng = random.Random(3)
    near = [store.put(b"near %d" % i * 20) for i in range(40)]
    store.put(rng.randbytes(3 << 20))
    store.put(rng.randbytes(3 << 20))
    far = [store.put(b"far %d" % i * 20) for i in range(40)]
    store.commit("c")
    wanted = far[::3] + near + far
    assert store.get_many(wanted) == [store.get(c) for c in wanted]


def test_get_many_repeats_each_get_their_bytes_and_a_damaged_repeat_is_refused(store_dir: Path) -> None:
    """A chunk asked for several times (decoded once) fills every place it was asked
    for, also when its repeats fall in different spans; a damaged chunk asked for
    twice is still refused with get()'s error, naming the pack and offset."""
    rng = random.Random(5)
    pages = contents(40)
    with Store.init(store_dir) as store:
        ids = [store.put(p) for p in pages]
        store.put(rng.randbytes(5 << 20))                                   # a gap no span bridges
        far = store.put(b"far away " * 100)
        store.commit("c")
        wanted = [far, ids[3], far] + ids[3:9] * 3 + [ids[0], far, ids[0]]
        assert store.get_many(wanted) == [store.get(c) for c in wanted]
    path = pack_files(store_dir)[0]
    victim = next(r for r in fmt.scan(path.read_bytes()).records if r.id == ids[7])
    flip_byte(path, victim.offset + fmt.RECORD_HEADER.size + victim.stored_len // 2)
    with Store.open(store_dir, readonly=True) as store:
        with pytest.raises(CorruptChunk) as single:
            store.get(ids[7])
        with pytest.raises(CorruptChunk) as batched:
            store.get_many([ids[6], ids[7], ids[8], ids[7]])
        assert str(batched.value) == str(single.value)
        assert f"{path.name} offset {victim.offset}" in str(batched.value)
