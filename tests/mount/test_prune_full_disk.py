"""`sls gc --keep-last 1` on a mount whose disk filled up: the retained history held the
deleted file, pruning it gives the space back and writers go on; named checkpoints stay."""
from __future__ import annotations

import errno
import json
import os

import pytest

from mount_helpers import sls


def write_synced(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fill_until_enospc(path) -> None:
    with pytest.raises(OSError) as e:
        with open(path, "wb") as f:
            for _ in range(200):                  # 200 MiB of random data: cannot fit in 48
                f.write(os.urandom(1024 * 1024))
                f.flush()
            os.fsync(f.fileno())
    assert e.value.errno == errno.ENOSPC


def test_keep_last_1_frees_a_full_disk_and_keeps_named_checkpoints(new_mount, small_disk):
    mnt = new_mount(root=small_disk / "m")
    write_synced(mnt.path / "keep", b"named before the disk filled")
    named = json.loads(sls("checkpoint", mnt.path, "--name", "before", "--json").stdout)["checkpoint"]
    fill_until_enospc(mnt.path / "filler")
    os.unlink(mnt.path / "filler")
    result = json.loads(sls("gc", mnt.path, "--keep-last", "1", "--json").stdout)
    assert result["bytes_freed"] > 16 * 2**20, result
    assert result["commits_after"] <= 3, result     # the newest, the named one, and gc's own
    block = os.urandom(16 * 2**20)
    write_synced(mnt.path / "after", block)           # ENOSPC before the prune
    log = json.loads(sls("log", mnt.path, "--json").stdout)["checkpoints"]
    assert named in [c["id"] for c in log]
    assert (mnt.path / f".sls/checkpoints/{named}/fs/keep").read_bytes() == b"named before the disk filled"
    mnt.umount()
    fsck = json.loads(sls("fsck", mnt.store, "--json").stdout)
    assert fsck["clean"], fsck["problems"]
    mnt.mount()
    assert (mnt.path / "after").read_bytes() == block
    assert (mnt.path / "keep").read_bytes() == b"named before the disk filled"


def test_a_refused_prune_says_why(mnt):
    (mnt.path / "f").write_bytes(b"x")
    sls("checkpoint", mnt.path, "--name", "kept")
    refused = sls("gc", mnt.path, "--forget", "nosuch", check=False)
    assert refused.returncode == 1 and "no checkpoint is named 'nosuch'" in refused.stderr
    log = json.loads(sls("log", mnt.path, "--json").stdout)["checkpoints"]
    kept = next(c["id"] for c in log if "kept" in c["tags"])
    refused = sls("gc", mnt.path, "--forget", str(kept), check=False)
    assert refused.returncode == 1 and "--forget kept" in refused.stderr
    refused = sls("gc", mnt.path, "--keep-within", "3 days", check=False)
    assert refused.returncode == 1 and "not a duration" in refused.stderr
    done = sls("gc", mnt.path, "--forget", "kept")
    assert "name kept forgotten" in done.stdout and "freed" in done.stdout
    assert kept not in [c["id"] for c in json.loads(sls("log", mnt.path, "--json").stdout)["checkpoints"]]
