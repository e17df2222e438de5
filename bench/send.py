"""Benchmark of moving a group to another store: `sls send` and `sls recv`; prints one JSON object.

A group (a Python process holding --heap-mib MiB of distinct memory, started with `sls
run --hz 0`) works in a volume holding a tree of --tree-mib MiB (files of 4 KiB to 8 MiB,
half random bytes, half text-like), copied in before its checkpoint `base`. Then a
hundredth of the tree is rewritten, the process dirties a tenth of its memory, and
checkpoint `next` is taken. Measured, the daemon running (as one sends a live group):
  - send_full_*: `sls send base -o FILE`, the full stream (its bytes, its time, MB/s of
    the tree and heap it carries), recv_full_*: `sls recv` of it into a new store,
    pipe_full_*: `sls send base | sls recv` into another new store (as to another machine);
  - send_incremental_*, recv_incremental_*: `sls send next --from base` and its recv into
    the store that received base;
  - restore_after_recv_ms: `sls restore` of the group in that store (a daemon's start,
    the mount, the processes): from the command's start to its exit, the group running;
  - the reference, in the same run on the same disk: plain_copy_* , `tar -c | tar -x` of the
    same tree into a plain directory then `sync -f` (recv makes its store durable too), and
    pipe_full_ratio, pipe_full_mb_s over plain_copy_mb_s (above 1: faster than the copy,
    which carries the tree alone, not the heap);
and `verified`: the received store's files after the restore equal the tree as it was at
`next`, and the restored process answers with its state of then.

Usage: python bench/send.py [--quick] [--dir DIR] [--tree-mib N] [--heap-mib N]
(root: `sls run` and `sls restore`; --quick: 64 MiB tree and 32 MiB heap, under a minute)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLS = [sys.executable, "-m", "slsfs.cli"]
MiB = 1 << 20

HOLDER = r"""
import os, sys, time
heap = bytearray(int(sys.argv[1]) << 20)
for at in range(0, len(heap), 4096):                 # distinct pages: nothing to dedup
    heap[at:at + 16] = at.to_bytes(8, "little") * 2
generation = 0
def dirty(share):
    global generation
    generation += 1
    for at in range(0, int(len(heap) * share) // 4096 * 4096, 4096):
        heap[at + 16:at + 24] = generation.to_bytes(8, "little")
    with open("generation.tmp", "w") as f:
        f.write(str(generation))
    os.replace("generation.tmp", "generation")
dirty(1.0)
while True:                                          # one more generation per request
    while not os.path.exists("dirty"):
        time.sleep(0.01)
    os.unlink("dirty")
    dirty(0.1)
"""


def sls(*args: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([*SLS, *args], capture_output=True, cwd=ROOT, timeout=600, **kw)
    if result.returncode != 0:
        raise SystemExit(f"bench: sls {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def make_tree(root: Path, mib: int, rng: random.Random) -> int:
    """Files of 4 KiB to 8 MiB, half random bytes, half text-like, `mib` MiB in all; their bytes."""
    words = [("%x" % rng.getrandbits(24)).encode() for _ in range(4096)]
    total, n = 0, 0
    while total < mib * MiB:
        size = min(rng.choice([4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 8 << 20]), mib * MiB - total)
        if n % 2:
            data = rng.randbytes(size)
        else:
            data = b" ".join(rng.choice(words) for _ in range(size // 6 + 1))[:size]
        path = root / f"d{n % 16:02d}" / f"f{n:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total, n = total + size, n + 1
    return total


def rewrite_a_hundredth(root: Path, rng: random.Random) -> int:
    """Rewrite files making up about 1% of the tree's bytes; the bytes rewritten."""
    files = sorted(p for p in root.rglob("f*") if p.is_file())
    budget = sum(p.stat().st_size for p in files) // 100
    changed = 0
    for path in rng.sample(files, len(files)):
        if changed >= budget:
            break
        size = path.stat().st_size
        path.write_bytes(rng.randbytes(size))
        changed += size
    return changed


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def generation(mnt: Path) -> int:
    try:
        return int((mnt / "generation").read_text())
    except (OSError, ValueError):
        return 0


def dirty_once(mnt: Path) -> None:
    before = generation(mnt)
    (mnt / "dirty").touch()
    wait_for(lambda: generation(mnt) > before, "the holder to dirty its memory")


def measure(work: Path, tree_mib: int, heap_mib: int) -> dict:
    rng = random.Random(1)
    source, plain = work / "tree", work / "plain"
    source.mkdir()
    plain.mkdir()
    tree_bytes = make_tree(source, tree_mib, rng)
    out: dict = {"tree_mib": round(tree_bytes / MiB, 1), "heap_mib": heap_mib}

    def plain_copy() -> None:
        tar = subprocess.Popen(["tar", "-C", str(source), "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-C", str(plain), "-xf", "-"], stdin=tar.stdout, check=True)
        tar.stdout.close()
        if tar.wait() != 0:
            raise SystemExit("bench: tar -c failed")
        subprocess.run(["sync", "-f", str(plain)], check=True)
    subprocess.run(["sync"], check=True)
    out["plain_copy_ms"] = round(timed(plain_copy), 1)
    out["plain_copy_mb_s"] = round(tree_bytes / MiB / (out["plain_copy_ms"] / 1000), 1)

    a, b, c = work / "a", work / "b", work / "c"
    sls("init", str(a))
    script = work / "holder.py"
    script.write_text(HOLDER)
    sls("run", "--store", str(a), "--name", "holder", "--hz", "0", "--", sys.executable, str(script), str(heap_mib))
    mnt_a = Path(str(a) + ".mnt")
    try:
        wait_for(lambda: generation(mnt_a) >= 1, "the holder to fill its memory", 120)
        shutil.copytree(source, mnt_a / "data")
        sls("checkpoint", "holder", "--store", str(a), "--name", "base")
        out["changed_mib"] = round(rewrite_a_hundredth(source, rng) / MiB, 2)
        shutil.rmtree(mnt_a / "data")
        shutil.copytree(source, mnt_a / "data")       # (the same bytes in the same files as the tree now)
        dirty_once(mnt_a)
        expected_generation = generation(mnt_a)
        sls("checkpoint", "holder", "--store", str(a), "--name", "next")

        full, incremental = work / "full.stream", work / "incremental.stream"
        subprocess.run(["sync"], check=True)
        out["send_full_ms"] = round(timed(lambda: sls("send", "base", "--store", str(a), "-o", str(full))), 1)
        out["stream_full_bytes"] = full.stat().st_size
        out["recv_full_ms"] = round(timed(lambda: sls("recv", str(b), "-i", str(full))), 1)

        def pipe() -> None:
            send = subprocess.Popen([*SLS, "send", "base", "--store", str(a)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, cwd=ROOT)
            sls("recv", str(c), stdin=send.stdout)
            send.stdout.close()
            if send.wait() != 0:
                raise SystemExit("bench: sls send failed in the pipe")
        out["pipe_full_ms"] = round(timed(pipe), 1)
        out["send_incremental_ms"] = round(timed(
            lambda: sls("send", "next", "--from", "base", "--store", str(a), "-o", str(incremental))), 1)
        out["stream_incremental_bytes"] = incremental.stat().st_size
        out["recv_incremental_ms"] = round(timed(lambda: sls("recv", str(b), "-i", str(incremental))), 1)
    finally:
        sls("stop", "--store", str(a))
    carried = (tree_bytes + heap_mib * MiB) / MiB
    for kind in ("send_full", "recv_full", "pipe_full"):
        out[f"{kind}_mb_s"] = round(carried / (out[f"{kind}_ms"] / 1000), 1)
    out["pipe_full_ratio"] = round(out["pipe_full_mb_s"] / out["plain_copy_mb_s"], 2)

    mnt_b = Path(str(b) + ".mnt")
    try:
        out["restore_after_recv_ms"] = round(timed(lambda: sls("restore", "holder", "--store", str(b))), 1)
        same = subprocess.run(["diff", "-rq", str(source), str(mnt_b / "data")], capture_output=True).returncode == 0
        answered = generation(mnt_b) == expected_generation
        if answered:
            dirty_once(mnt_b)                         # the restored process works on from its memory
            answered = generation(mnt_b) == expected_generation + 1
        out["verified"] = same and answered
    finally:
        sls("stop", "--store", str(b))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB tree, 32 MiB heap")
    parser.add_argument("--dir", help="work directory (default: a new temporary one)")
    parser.add_argument("--tree-mib", type=int)
    parser.add_argument("--heap-mib", type=int)
    args = parser.parse_args()
    tree_mib = args.tree_mib or (64 if args.quick else 512)
    heap_mib = args.heap_mib or (32 if args.quick else 256)
    work = Path(tempfile.mkdtemp(prefix="slsfs-bench-send-", dir=args.dir))
    try:
        result = measure(work, tree_mib, heap_mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "send", "quick": args.quick, "load_average": os.getloadavg()[0], **result},
                     indent=2))


if __name__ == "__main__":
    main()
