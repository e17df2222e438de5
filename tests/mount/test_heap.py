"""The daemon reuses its freed request buffers (mount.heap) instead of faulting fresh pages
in for every WRITE request (~190 page faults per MiB written with glibc's defaults)."""
from __future__ import annotations

import os
from pathlib import Path

MiB = 1024 * 1024


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def write_file(path: Path, mib: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def test_sequential_writes_reuse_the_daemons_buffers(mnt):
    """The fewest faults of three writes: the daemon's own work meanwhile (a checkpoint, a
    new pack's index) faults in pages too, up to ~65 per MiB in one write of a CI run."""
    write_file(mnt.path / "warm-up", 32)           # the heap grows once
    faults = []
    for i in range(3):
        before = minor_faults(mnt.pid)
        write_file(mnt.path / f"measured-{i}", 32)
        faults.append((minor_faults(mnt.pid) - before) / 32)
        assert (mnt.path / f"measured-{i}").stat().st_size == 32 * MiB
    assert min(faults) < 64, f"page faults per MiB written (256 pages per MiB): {faults}"
