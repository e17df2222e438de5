"""A checkpoint being read is not thinned under its reader.

At 100 checkpoints a second, retention's newest 100 span one second: a copy of
`.sls/latest/fs` that took longer used to lose its remaining paths half way (ENOENT)
when retention or `sls gc` forgot that checkpoint. Checkpoints whose tree the kernel
still holds an inode of are kept; the others are thinned as before.
"""
from __future__ import annotations

import json
import os

from mount_helpers import sls

KEEP_LAST = 100              # objectstore.retention.RetentionPolicy.keep_last


def checkpoint(mnt) -> int:
    return json.loads(sls("checkpoint", mnt.path, "--json").stdout)["checkpoint"]


def checkpoint_ids(mnt) -> set[int]:
    return {c["id"] for c in json.loads(sls("log", mnt.path, "--json", "-n", "0").stdout)["checkpoints"]}


def test_a_checkpoint_being_read_survives_retention_and_gc(mnt):
    (mnt.path / "tree" / "sub").mkdir(parents=True)
    for i in range(20):
        (mnt.path / "tree" / "sub" / f"f{i}").write_text(f"old {i}")
    untouched = checkpoint(mnt)                  # nobody reads this one
    browsed = checkpoint(mnt)
    fs = mnt.path / ".sls" / "checkpoints" / str(browsed) / "fs"
    held = os.open(fs / "tree" / "sub" / "f0", os.O_RDONLY)   # a reader half way through
    try:
        assert os.read(held, 100) == b"old 0"
        for i in range(KEEP_LAST + 20):          # push both out of the newest 100
            path = mnt.path / f"n{i}"
            path.write_text(str(i))
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)                         # one checkpoint each
            os.close(fd)
        sls("gc", mnt.path)
        ids = checkpoint_ids(mnt)
        assert untouched not in ids              # retention still thins the others
        assert browsed in ids
        # a fresh path walk (what the rest of a copy does) still finds every file
        assert sorted(os.listdir(fs / "tree" / "sub")) == sorted(f"f{i}" for i in range(20))
        assert all((fs / "tree" / "sub" / f"f{i}").read_text() == f"old {i}" for i in range(20))
        assert os.pread(held, 100, 0) == b"old 0"
    finally:
        os.close(held)
    fsck = json.loads(sls("fsck", mnt.path, "--json").stdout)
    assert fsck["clean"], fsck["problems"]
