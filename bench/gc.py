"""Benchmark: what a steady writer in a mount sees while the store is collected. Prints ONE
JSON object.

    .venv/bin/python bench/gc.py [--quick] [--dir DIR]

A store is built with a bulk of small live chunks (the pages retention keeps: ~250k in a
Redis group's store) named by a root outside the file system, interleaved in the same
packs with pages of a thinned history (garbage), then mounted (`sls mount`, periodic
checkpoints every 10 ms). One thread writes 4 KiB and fdatasync()s in a loop (a durable
commit each), another looks up names that are not there (a LOOKUP each): requests the
daemon answers. Measured in the same run:

- `no_gc`: each loop's op latencies (median, p99, max: the longest stall) over a window
  without a collection, the ops and checkpoints per second, the daemon's CPU;
- `during_gc`: the same while `sls gc --keep-last 1` runs (a collection in steps beside
  the requests), plus the collection's wall time, the time it spent in the daemon's trio
  thread (`busy_seconds`), live chunks, bytes freed;
- `stop_the_world_s`: the reference: the same collection run at once on a copy of the
  store (objectstore.gc.collect), which every request waited for before collections
  ran in steps; with its CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mount.control import request  # noqa: E402
from mount.filesystem import ensure_volume  # noqa: E402
from objectstore import Store  # noqa: E402
from objectstore.gc import collect  # noqa: E402
from objectstore.retention import Prune  # noqa: E402

SLS = [sys.executable, "-m", "slsfs.cli"]
REFS_PER_ENTRY = 250
PAGE = 4096


def build(path: Path, live_chunks: int, garbage_mib: int) -> None:
    """A store whose packs mix live chunks (root "bulk") with pages only forgotten
    commits reach (a root "history" set, committed, then dropped by later commits)."""
    subprocess.run([*SLS, "init", str(path)], check=True, capture_output=True)
    garbage_per_entry = max(1, garbage_mib * (1 << 20) // PAGE // (live_chunks // REFS_PER_ENTRY))
    with Store.open(path) as store:
        ensure_volume(store, "main")
        bulk = store.tree()
        for entry in range(live_chunks // REFS_PER_ENTRY):
            first = entry * REFS_PER_ENTRY
            bulk.put(entry.to_bytes(4, "big"), b"",
                     store.put_many([b"live chunk %d" % n for n in range(first, first + REFS_PER_ENTRY)]))
            junk = store.tree()
            junk.put(b"pages", b"", store.put_many([os.urandom(PAGE) for _ in range(garbage_per_entry)]))
            store.set_root("history", junk.flush())
            store.commit(f"history {entry}")
        store.set_root("history", None)
        store.set_root("bulk", bulk.flush())
        store.commit("bulk", durable=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Loop:
    """A thread running `op(n)` in a loop, n = 0, 1, ...; each op's end time and latency."""

    def __init__(self, op):
        self.op = op
        self.ops: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.perf_counter()
            self.op(n)
            ended = time.perf_counter()
            self.ops.append((ended, ended - started))
            n += 1

    def window(self, start: float, end: float) -> dict:
        lat = sorted(d for t, d in self.ops if start <= t <= end)
        if not lat:
            return {"ops": 0}
        return {"ops_per_s": round(len(lat) / (end - start)), "median_ms": round(statistics.median(lat) * 1e3, 3),
                "p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 3), "max_ms": round(lat[-1] * 1e3, 2)}

    def end(self) -> None:
        self.stop.set()
        self.thread.join()


def fsynced_writes(path: Path):
    """A database-like writer: 4 KiB written, then fdatasync (a durable commit on a plain mount)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    block = os.urandom(PAGE)

    def op(n: int) -> None:
        os.pwrite(fd, block, (n % 1024) * PAGE)
        os.fdatasync(fd)
    return op, fd


def lookups(directory: Path):
    """A name looked up that was never there: a LOOKUP the daemon answers each time."""
    def op(n: int) -> None:
        try:
            os.stat(directory / f"missing-{n}")
        except FileNotFoundError:
            pass
    return op


def measured(loops: dict[str, Loop], store: Path, pid: int, work) -> dict:
    """Run `work()` with the loops going; their figures over that window, and work's result."""
    checkpoints, cpu = request(store, "status")["checkpoints_taken"], cpu_seconds(pid)
    start = time.perf_counter()
    result = work()
    end = time.perf_counter()
    out = {name: loop.window(start, end) for name, loop in loops.items()}
    out["checkpoints_per_s"] = round((request(store, "status")["checkpoints_taken"] - checkpoints) / (end - start), 1)
    out["daemon_cpu_s"] = round(cpu_seconds(pid) - cpu, 3)
    out["seconds"] = round(end - start, 3)
    if result:
        out["collection"] = {k: result[k] for k in ("seconds", "busy_seconds", "longest_step_ms", "live_chunks",
                                                      "unreachable_chunks", "packs_compacted", "bytes_freed")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k live chunks, 64 MiB of garbage")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args()
    live, garbage = (100_000, 64) if args.quick else (250_000, 256)
    work = Path(tempfile.mkdtemp(prefix="bench-gc-", dir=args.dir))
    out: dict = {"live_chunks_built": live, "garbage_mib_built": garbage, "load_average_before": os.getloadavg()}
    store, mnt = work / "store", work / "mnt"
    mnt.mkdir()
    try:
        build(store, live, garbage)
        shutil.copytree(store, work / "reference")
        with Store.open(work / "reference") as ref:
            wall, cpu = time.perf_counter(), time.process_time()
            collect(ref, prune=Prune(keep_last=1))
            out["stop_the_world_s"] = round(time.perf_counter() - wall, 3)
            out["stop_the_world_cpu_s"] = round(time.process_time() - cpu, 3)
        shutil.rmtree(work / "reference")
        subprocess.run([*SLS, "mount", str(store), str(mnt)], check=True, capture_output=True)
        pid = request(store, "status")["pid"]
        write, fd = fsynced_writes(mnt / "steady")
        loops = {"fsynced_writes": Loop(write), "lookups": Loop(lookups(mnt))}
        try:
            time.sleep(0.5)                        # the writer's file exists, its pages are warm
            out["no_gc"] = measured(loops, store, pid, lambda: time.sleep(out["stop_the_world_s"] + 1))
            out["during_gc"] = measured(loops, store, pid, lambda: request(store, "gc", prune={"keep_last": 1}))
        finally:
            for loop in loops.values():
                loop.end()
            os.close(fd)
            subprocess.run([*SLS, "umount", str(mnt)], capture_output=True)
        out["load_average_after"] = os.getloadavg()
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
