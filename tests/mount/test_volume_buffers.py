"""The inode layer without FUSE: the two shortcuts of a file's data between checkpoints.

- Volume.write keeps a whole block of a `bytes` request as a view of it, not a copy; a
  buffer that may change after the call (bytearray) must still be copied.
- Volume.seal puts each block written in part into the block cache (shared with the
  read-only views of older trees), so the next partial write does not read it back.

Each test fails if a shortcut loses or changes a byte: a file is compared with a plain
bytearray model after every seal, in a read-only copy of an older tree, and after the
store is reopened from disk.
"""
from __future__ import annotations

import os
import random
import stat

from objectstore import Store

from mount.filesystem import ensure_volume
from mount.schema import BLOCK_SIZE
from mount.volume import Volume

FILE = stat.S_IFREG | 0o644


def _open(path):
    store = Store.open(path)
    return store, Volume(store, store.volume("main"), "main")


def _new(path):
    store = Store.init(path)
    ensure_volume(store, "main")
    return store, Volume(store, store.volume("main"), "main")


def _content(volume: Volume, ino: int) -> bytes:
    return volume.read(ino, 0, volume.inode(ino).size + 1)


def test_a_buffer_changed_after_the_write_does_not_change_the_file(tmp_path):
    store, volume = _new(tmp_path / "store")
    try:
        ino = volume.create(volume.root_ino, b"f", FILE, 0, 0).ino
        written = bytearray(os.urandom(2 * BLOCK_SIZE))
        expected = bytes(written)
        volume.write(ino, 0, written)
        written[:] = bytes(len(written))        # the caller reuses its buffer
        assert _content(volume, ino) == expected
        volume.seal()
        assert _content(volume, ino) == expected
    finally:
        store.close()


def test_whole_blocks_of_one_request_are_stored_as_written(tmp_path):
    store, volume = _new(tmp_path / "store")
    try:
        ino = volume.create(volume.root_ino, b"f", FILE, 0, 0).ino
        data = os.urandom(8 * BLOCK_SIZE + 1000)     # a 1 MiB request and a tail
        zeros = bytes(BLOCK_SIZE)
        volume.write(ino, 0, data)
        volume.write(ino, 3 * BLOCK_SIZE, zeros)     # a hole inside, from a view as well
        expected = data[:3 * BLOCK_SIZE] + zeros + data[4 * BLOCK_SIZE:]
        volume.seal()
        store.commit("written")
        assert _content(volume, ino) == expected
        assert volume.allocated_bytes(ino) == len(expected) - BLOCK_SIZE
        store.close()
        store, volume = _open(tmp_path / "store")
        assert _content(volume, ino) == expected
    finally:
        store.close()


def test_partial_writes_sealed_again_and_again_match_a_model(tmp_path):
    """Random writes (in part, whole blocks, across blocks), truncations and seals: after
    each seal the file, and a read-only copy of the tree of each earlier seal (which
    reads through the same block cache), still hold what they held."""
    rng = random.Random(7)
    store, volume = _new(tmp_path / "store")
    try:
        ino = volume.create(volume.root_ino, b"db", FILE, 0, 0).ino
        model = bytearray()
        history: list[tuple[Volume, bytes]] = []
        for _round in range(40):
            for _ in range(rng.randrange(1, 6)):
                choice = rng.random()
                if choice < 0.6:        # a database page somewhere in the file or past it
                    offset = rng.randrange(0, max(1, len(model)) + 4096)
                    data = rng.randbytes(rng.choice([1, 100, 4096, 5000]))
                elif choice < 0.85:     # whole blocks, as the kernel's writeback sends them
                    offset = rng.randrange(0, 4) * BLOCK_SIZE
                    data = rng.randbytes(BLOCK_SIZE * rng.randrange(1, 3))
                else:
                    size = rng.randrange(0, max(1, len(model)) + 1)
                    volume.truncate(ino, size)
                    del model[size:]
                    continue
                if rng.random() < 0.5:
                    data = bytearray(data)
                volume.write(ino, offset, data)
                if offset > len(model):
                    model.extend(bytes(offset - len(model)))
                model[offset:offset + len(data)] = data
            volume.seal()
            assert _content(volume, ino) == model
            history.append((Volume(store, volume.tree.copy(), "main", readonly=True,
                                   block_cache=volume.block_cache), bytes(model)))
            for old, held in history[-5:]:
                assert _content(old, ino) == held
        store.commit("the end")
        store.close()
        store, volume = _open(tmp_path / "store")
        assert _content(volume, ino) == model
    finally:
        store.close()
