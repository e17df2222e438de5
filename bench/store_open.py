"""Benchmark: opening a store, and `sls restore GROUP` after a crash; prints one JSON object.

Opening (--records N,...): a store whose active pack holds N small records (page-like
chunks put in batches of 20,000, each batch a durable commit, as a checkpointing daemon
leaves it), opened read-only (what `sls log`, `sls ps` and the command of `sls restore`
do) and to write (the daemon), each also followed by a first chunk lookup, which builds
the in-RAM chunk index (open_*_ms, open_*_first_lookup_ms: medians of REPEAT). The
reference: reading the bytes of the store's index files, which any open reads
(read_index_files_ms).

Restore (--group-mib M,...): a group whose process holds M MiB of distinct pages (each
a random 4 KiB with its number in front: lz4 does not shrink them), checkpointed three
times (--hz 0, `sls checkpoint`), then SIGKILLed with its daemon RESTORES times, each
followed by `sls restore GROUP --store STORE`: its wall time from the command's start
to its exit (restore_cli_wall_ms_M: median; _all: each, beside the load average of the
minute before) and the daemon's start as it reports it (`ps` startup_ms of the median
run). Reference: the daemon's own restore of the group (restore_daemon_ms_M).

Usage: python bench/store_open.py [--records 100000,500000] [--group-mib 10,1024] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)              # bench/objectstore.py must not shadow the objectstore package
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mount.control import request  # noqa: E402
from objectstore import Store  # noqa: E402

REPEAT = 5
RESTORES = 3
BATCH = 20_000
TARGET = '''\
import os, sys, time
size = int(sys.argv[1]) << 20
memory = bytearray(os.urandom(1 << 20) * (size >> 20))
for page in range(0, size, 4096):
    memory[page:page + 8] = page.to_bytes(8, "little")
open("ready", "w").close()
while True:
    time.sleep(1)
'''


def median_ms(fn, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def small_records_store(path: Path, records: int) -> None:
    rng = random.Random(records)
    with Store.init(path) as store:
        done = 0
        while done < records:
            batch = [rng.randbytes(16) + bytes(48) for _ in range(min(BATCH, records - done))]
            store.put_many(batch)
            done += len(batch)
            store.commit(f"{done} records", durable=True)


def bench_open(work: Path, records: int, out: dict) -> None:
    path = work / f"store-{records}"
    small_records_store(path, records)

    def open_close(readonly: bool, lookup: bool) -> None:
        with Store.open(path, readonly=readonly) as store:
            if lookup:
                store.has(bytes(16))

    def read_index_files() -> None:
        for index in (path / "packs").glob("*idx"):
            index.read_bytes()
    for readonly, mode in ((True, "read_only"), (False, "to_write")):
        out[f"open_{mode}_ms_{records}"] = median_ms(lambda: open_close(readonly, False))
        out[f"open_{mode}_first_lookup_ms_{records}"] = median_ms(lambda: open_close(readonly, True))
    out[f"read_index_files_ms_{records}"] = median_ms(read_index_files)
    out[f"open_load_avg_1min_{records}"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(path)


def sls(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"sls {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def crash(store: Path) -> None:
    status = request(store, "ps")
    for group in status["groups"]:
        for pid in group["pids"]:
            os.kill(pid, signal.SIGKILL)
    os.kill(status["daemon"], signal.SIGKILL)
    time.sleep(0.5)


def bench_restore(work: Path, mib: int, out: dict) -> None:
    store = work / f"group-{mib}"
    script = work / "target.py"
    script.write_text(TARGET)
    sls("init", str(store))
    mnt = Path(f"{store}.mnt")
    sls("run", "--store", str(store), "--name", "big", "--hz", "0", "--", sys.executable, str(script), str(mib))
    try:
        while not (mnt / "ready").exists():
            time.sleep(0.2)
        for _ in range(3):
            sls("checkpoint", "big", "--store", str(store))
        runs = []
        for _ in range(RESTORES):
            crash(store)
            load = os.getloadavg()[0]
            started = time.perf_counter()
            sls("restore", "big", "--store", str(store))
            wall = round((time.perf_counter() - started) * 1000, 1)
            status = request(store, "ps")
            runs.append((wall, status["groups"][0]["restore_ms"], round(load, 2), status.get("startup_ms")))
        runs.sort(key=lambda run: run[0])
        median = runs[len(runs) // 2]
        out[f"restore_cli_wall_ms_{mib}"] = median[0]
        out[f"restore_daemon_ms_{mib}"] = statistics.median(run[1] for run in runs)
        out[f"restore_cli_wall_ms_{mib}_all"] = [run[0] for run in runs]
        out[f"restore_load_avg_1min_{mib}"] = [run[2] for run in runs]
        out[f"restore_daemon_startup_ms_{mib}"] = median[3]
        out[f"store_bytes_{mib}"] = sum(f.stat().st_size for f in (store / "packs").iterdir())
    finally:
        sls("stop", "--store", str(store))
        shutil.rmtree(store, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", default="100000,500000", help="records in the active pack (comma-separated; '' for none)")
    parser.add_argument("--group-mib", default="10,1024", help="group sizes to restore (comma-separated; '' for none)")
    parser.add_argument("--dir", help="work directory (default: a new temporary one)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="slsfs-bench-open-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"benchmark": "store_open", "repeat": REPEAT, "restores": RESTORES}
    try:
        for records in filter(None, args.records.split(",")):
            bench_open(work, int(records), out)
        for mib in filter(None, args.group_mib.split(",")):
            bench_restore(work, int(mib), out)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
