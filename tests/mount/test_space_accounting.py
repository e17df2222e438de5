"""st_blocks counts what a file holds, not its size: holes take no space.

`du`, and `cp`/`tar -S`/`rsync -S` deciding whether a file is sparse, read st_blocks;
it used to be the size rounded up, so a 1 TiB sparse file showed 1 TiB used.
"""
from __future__ import annotations

import json
import os
import subprocess

from mount_helpers import sls

BLOCK = 128 * 1024          # mount.schema.BLOCK_SIZE: a written byte allocates at most one block


def used(path) -> int:
    return os.stat(path).st_blocks * 512


def test_holes_take_no_space_buffered_committed_and_remounted(mnt):
    sparse = mnt.path / "sparse"
    with open(sparse, "wb") as f:
        f.write(b"h" * 4096)
        f.seek(2**40)
        f.write(b"tail")
    (mnt.path / "dense").write_bytes(os.urandom(3 * 2**20 + 123))
    with open(mnt.path / "hole_only", "wb") as f:
        f.truncate(2**30)

    def check(root) -> None:
        assert os.stat(root / "sparse").st_size == 2**40 + 4
        assert 4096 + 4 <= used(root / "sparse") <= 2 * BLOCK
        assert used(root / "dense") >= 3 * 2**20 + 123
        assert used(root / "dense") < 3 * 2**20 + 123 + BLOCK
        assert used(root / "hole_only") == 0
        du = subprocess.run(["du", "-s", "--block-size=1", str(root / "sparse")],
                            capture_output=True, text=True, check=True).stdout
        assert int(du.split()[0]) <= 2 * BLOCK

    check(mnt.path)                                  # still buffered in the daemon
    cid = json.loads(sls("checkpoint", mnt.path, "--json").stdout)["checkpoint"]
    check(mnt.path)                                  # sealed into the store
    check(mnt.path / ".sls" / "checkpoints" / str(cid) / "fs")
    mnt.umount()
    mnt.mount()
    check(mnt.path)


def test_space_follows_truncate_and_zeroed_blocks(mnt):
    path = mnt.path / "f"
    path.write_bytes(b"x" * (4 * BLOCK))
    assert used(path) == 4 * BLOCK
    os.truncate(path, BLOCK + 10)                    # two blocks left, the second 10 bytes long
    assert used(path) == BLOCK + 512                  # the 10-byte tail: one 512-byte unit
    with open(path, "r+b") as f:                     # a block rewritten with zeros becomes a hole
        f.write(bytes(BLOCK))
        f.flush()
        os.fsync(f.fileno())
    assert used(path) == 512
    os.truncate(path, 0)
    assert used(path) == 0


def test_space_of_a_small_file_follows_each_change(mnt):
    path = mnt.path / "small"
    path.write_bytes(b"a" * 100)
    sls("checkpoint", mnt.path)
    assert used(path) == 512
    with open(path, "r+b") as f:                     # zeros: a hole once sealed
        f.write(bytes(100))
        f.flush()
        os.fsync(f.fileno())
    assert used(path) == 0
    with open(path, "ab") as f:
        f.write(b"b" * 1000)
        f.flush()
        os.fsync(f.fileno())
    assert used(path) == 1536                        # 1,100 bytes: three 512-byte units
    os.truncate(path, 150)                           # keeps 50 bytes of b
    sls("checkpoint", mnt.path)
    assert used(path) == 512
