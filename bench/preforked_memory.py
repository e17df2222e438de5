"""Benchmark: the memory a pre-forked tree holds after a restore; prints one JSON object.

A master fills HEAP_MIB of private memory and forks WORKERS workers that share it
copy-on-write (tests/checkpointer/targets/preforked.c, as nginx, PostgreSQL or gunicorn
with preload do). The tree is checkpointed, killed and restored; the reference is the
same tree before the checkpoint. Figures: the sums over the tree's processes of Rss and
Pss (/proc/PID/smaps_rollup, KiB; Pss counts a page shared by N processes 1/N in each),
and restore_ms (restore() until the processes run).

usage: bench/preforked_memory.py [--heap-mib N] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import checkpointer  # noqa: E402
from objectstore import Store  # noqa: E402


def memory(pids: list[int]) -> dict[str, int]:
    """Sum of Rss and Pss (KiB) over `pids`."""
    total = {"rss_kib": 0, "pss_kib": 0}
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("Rss", "Pss"):
                total[f"{name.lower()}_kib"] += int(value.split()[0])
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heap-mib", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="preforked-bench-"))
    binary, out = work / "preforked", work / "out"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(ROOT / "tests/checkpointer/targets/preforked.c")], check=True)
    proc = subprocess.Popen([str(binary), str(out), str(args.heap_mib), str(args.workers)], start_new_session=True)
    restored = None
    try:
        while not (out.exists() and "ready" in out.read_text()):
            time.sleep(0.01)
        workers = [int(line.split()[1]) for line in out.read_text().splitlines() if line.startswith("worker")]
        result = {"heap_mib": args.heap_mib, "workers": args.workers,
                  "original": memory([proc.pid] + workers), "load_average": os.getloadavg()[0]}
        store = Store.init(work / "store")
        checkpointer.checkpoint([proc.pid], store, "tree", tree=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        started = time.monotonic()
        restored = checkpointer.restore(store, "tree")
        result["restore_ms"] = round((time.monotonic() - started) * 1000, 1)
        result["restored"] = memory(restored.pids)
        store.close()
        print(json.dumps(result))
    finally:
        if restored is not None:
            restored.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
