"""copy_file_range(2) on a mount (mount.extra_requests passes it: pyfuse3 does not).

Random copies between two files, with writes between them, give the same bytes as on the
local disk (ext4), before and after a remount; a copy from a checkpoint's `fs/` tree
restores a file; a copy from a `.sls/` file goes through the kernel's fallback. Whole
blocks are shared, not copied (Volume.copy_range): the copy names the source's chunks,
and writing either file afterwards leaves the other as it was.
"""
from __future__ import annotations

import json
import os
import random
import stat

from mount_helpers import sls
from objectstore import Store

from mount import schema
from mount.filesystem import ensure_volume
from mount.volume import Volume

BLOCK = schema.BLOCK_SIZE


def copy_all(src: int, dst: int, length: int, offset_in: int, offset_out: int) -> int:
    """copy_file_range until `length` bytes are copied or the source ends (it may copy less
    per call); the count copied."""
    done = 0
    while done < length:
        n = os.copy_file_range(src, dst, length - done, offset_in + done, offset_out + done)
        if n == 0:
            break
        done += n
    return done


def test_random_copies_give_the_bytes_the_local_disk_gives(mnt, workdir):
    rng = random.Random(os.environ.get("SLSFS_COPY_SEED", "copy_file_range"))
    sides = [[os.open(d / name, os.O_RDWR | os.O_CREAT, 0o644) for name in ("a", "b")]
             for d in (mnt.path, workdir)]
    try:
        for fds in sides:
            os.pwrite(fds[0], rng.randbytes(1), 0)      # (the same bytes on both sides below)
        for step in range(150):
            which = rng.randrange(2)
            offset = rng.choice([0, BLOCK, 2 * BLOCK, rng.randrange(8 * BLOCK)])
            offset_out = rng.choice([offset, 0, BLOCK, 3 * BLOCK, rng.randrange(8 * BLOCK)])
            length = rng.choice([BLOCK, 3 * BLOCK, rng.randrange(1, 5 * BLOCK), 64 * BLOCK])
            if rng.random() < 0.4:
                payload = rng.randbytes(length % (2 * BLOCK) + 1)
                for fds in sides:
                    os.pwrite(fds[which], payload, offset)
            else:
                counts = [copy_all(fds[which], fds[1 - which], length, offset, offset_out) for fds in sides]
                assert counts[0] == counts[1], (step, counts)
            if step % 10 == 9:
                for i in range(2):
                    assert os.pread(sides[0][i], 1 << 24, 0) == os.pread(sides[1][i], 1 << 24, 0), (step, i)
    finally:
        for fds in sides:
            for fd in fds:
                os.close(fd)
    expected = [(workdir / name).read_bytes() for name in ("a", "b")]
    mnt.umount()
    mnt.mount()
    assert [(mnt.path / name).read_bytes() for name in ("a", "b")] == expected


def test_a_file_is_restored_from_a_checkpoint_by_copying_it(mnt):
    path = mnt.path / "kept"
    old = os.urandom(5 * BLOCK + 17)
    path.write_bytes(old)
    checkpoint = json.loads(sls("checkpoint", mnt.path, "--json").stdout)["checkpoint"]
    path.write_bytes(os.urandom(3 * BLOCK))
    source = mnt.path / ".sls" / "checkpoints" / str(checkpoint) / "fs" / "kept"
    with open(source, "rb") as src, open(path, "r+b") as dst:
        assert copy_all(src.fileno(), dst.fileno(), 1 << 30, 0, 0) == len(old)
    assert path.read_bytes() == old
    info = mnt.path / ".sls" / "checkpoints" / str(checkpoint) / "info.json"
    with open(info, "rb") as src, open(mnt.path / "info", "wb") as dst:      # the kernel's fallback
        assert copy_all(src.fileno(), dst.fileno(), 1 << 20, 0, 0) == info.stat().st_size
    assert (mnt.path / "info").read_bytes() == info.read_bytes()


def test_whole_blocks_are_shared_and_the_copies_stay_independent(tmp_path):
    store = Store.init(tmp_path / "store")
    try:
        ensure_volume(store, "main")
        volume = Volume(store, store.volume("main"), "main")
        mode = stat.S_IFREG | 0o644
        src, dst = (volume.create(volume.root_ino, name, mode, 0, 0).ino for name in (b"src", b"dst"))
        data = os.urandom(4 * BLOCK + 100)
        volume.write(src, 0, data)
        volume.seal()
        copied = volume.copy_range(volume, src, 0, dst, BLOCK, len(data), max_written=1 << 30)
        assert copied == len(data)
        for block in range(4):      # at the same place in their blocks: shared
            assert volume.tree.get(schema.block_key(dst, block + 1)) == volume.tree.get(schema.block_key(src, block))
        volume.write(src, 0, b"x" * BLOCK)                  # neither changes the other
        volume.write(dst, 2 * BLOCK, b"y" * 10)
        volume.seal()
        assert volume.read(src, 0, len(data)) == b"x" * BLOCK + data[BLOCK:]
        assert volume.read(dst, 0, 10 * BLOCK) == bytes(BLOCK) + data[:BLOCK] + b"y" * 10 + data[BLOCK + 10:]
        shifted = volume.copy_range(volume, src, 1, dst, 0, 2 * BLOCK, max_written=BLOCK)
        assert shifted == BLOCK         # not aligned: read and written, and stopped at max_written
        assert volume.read(dst, 0, BLOCK) == volume.read(src, 1, BLOCK)
    finally:
        store.close()
