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


FRAGMENTED_HEAP = """
import sys
from mount import heap
heap.keep_freed_buffers()                    # as the daemon runs
blocks = [bytes(5000) for _ in range(40_000)]  # ~200 MB of 5 KB allocations, as pages and records are
kept = blocks[::8]                           # one in eight stays alive: the free space lies between them
del blocks
def anon_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon:")).split()[1])
before = anon_kib()
done = heap.give_back_free_memory()
print(before, anon_kib(), done)
"""


def test_freed_memory_in_the_middle_of_the_heap_goes_back_to_the_kernel():
    """What a daemon freed between objects still alive is returned (malloc_trim), where
    glibc on its own keeps it: the resident size follows what is in use."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    before, after, done = int(out[0]), int(out[1]), out[2]
    assert done == "True"
    assert before > 150_000, f"the heap did not hold the freed blocks to begin with: {before} KiB"
    assert after < before - 100_000, f"resident anonymous memory {before} -> {after} KiB"
