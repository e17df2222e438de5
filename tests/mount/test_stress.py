"""Several processes writing at once while checkpoints and snapshots run."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from mount_helpers import sls

WORKER = r"""
import hashlib, os, sys
root, wid = sys.argv[1], int(sys.argv[2])
log = os.open(os.path.join(root, "shared.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for i in range(60):
    data = hashlib.sha256(b"%d-%d" % (wid, i)).digest() * (50 + 37 * i)
    path = os.path.join(root, f"w{wid}", f"f{i:03d}")
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)                     # atomic replace pattern
    with open(os.path.join(root, f"w{wid}", "grow"), "ab") as f:
        f.write(data[:100])
    os.write(log, b"worker %d line %03d\n" % (wid, i))
os.close(log)
"""
WORKERS = 4


def expected(wid: int, i: int) -> bytes:
    return hashlib.sha256(b"%d-%d" % (wid, i)).digest() * (50 + 37 * i)


def check_tree(root) -> None:
    lines = (root / "shared.log").read_bytes().splitlines()
    assert len(lines) == WORKERS * 60
    for wid in range(WORKERS):
        assert [l for l in lines if l.startswith(b"worker %d " % wid)] == \
            [b"worker %d line %03d" % (wid, i) for i in range(60)]
        for i in range(60):
            assert (root / f"w{wid}" / f"f{i:03d}").read_bytes() == expected(wid, i)
        assert (root / f"w{wid}" / "grow").read_bytes() == b"".join(expected(wid, i)[:100] for i in range(60))
        assert not any(p.name.endswith(".tmp") for p in (root / f"w{wid}").iterdir())


def test_concurrent_writers_with_checkpoints_and_snapshots(mnt):
    for wid in range(WORKERS):
        (mnt.path / f"w{wid}").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(mnt.path), str(wid)],
                              stderr=subprocess.PIPE, text=True) for wid in range(WORKERS)]
    try:
        n = 0
        while any(p.poll() is None for p in procs):
            sls("checkpoint", mnt.path)
            sls("snapshot", mnt.path, "--name", f"during-{n}")
            n += 1
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    check_tree(mnt.path)
    last = json.loads(sls("checkpoint", mnt.path, "--json").stdout)["checkpoint"]
    check_tree(mnt.path / ".sls" / "checkpoints" / str(last) / "fs")
    mnt.umount()
    assert json.loads(sls("fsck", mnt.store, "--json").stdout)["clean"]
    mnt.mount()
    check_tree(mnt.path)
