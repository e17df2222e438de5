"""A file read again is served by the kernel's page cache: the daemon sees no READ.

The hot read (bench/fs.py seq_read, issue 3's target of 0.8 of ext4) is the kernel's
alone only while the pages a write or a first read left stay valid: across close and a
new open (the OPEN reply's keep_cache), across fsync, a checkpoint and a stat (with the
writeback cache the kernel keeps its own size and mtime, so the attributes the daemon
returns do not make it drop the pages; auto_inval_data would otherwise drop them when the
mtime differs). Counted from the kernel's own trace of what it sends (bench/fuse_requests.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mount_helpers import sls

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.fuse_requests import FuseRequests  # noqa: E402

MiB = 1024 * 1024


def read_in_blocks(path: Path) -> bytes:
    """The whole file, read with a new open in 1 MiB read(2)s as an application would."""
    with open(path, "rb", buffering=0) as f:
        return b"".join(iter(lambda: f.read(MiB), b""))


def test_a_file_read_after_its_write_and_reopened_never_reaches_the_daemon(mnt):
    data = os.urandom(8 * MiB + 12345)
    path = mnt.path / "hot"
    with open(path, "wb") as f:
        for offset in range(0, len(data), MiB):
            f.write(data[offset:offset + MiB])
        f.flush()
        os.fsync(f.fileno())
    with FuseRequests(mnt.path) as seen:
        assert read_in_blocks(path) == data          # right after the write
        assert read_in_blocks(path) == data          # a new open
        sls("checkpoint", mnt.path)
        os.stat(path)
        assert read_in_blocks(path) == data          # after a checkpoint and a stat
    if seen.counts is None:
        pytest.skip("the kernel's FUSE trace events are not available")
    assert seen.counts["OPEN"] == 3                  # the trace saw the reads' opens
    assert seen.counts["READ"] == 0, seen.counts
