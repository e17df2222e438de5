"""Benchmark: restoring a pre-forked tree whose workers inherit their master's fds;
prints one JSON object.

A master opens PIPES pipes and forks WORKERS workers that keep them (as a pre-forking
server's workers inherit its listeners, logs and connections): every worker's fds are
made once, in the master, and fetched from there (pidfd_getfd). The reference, in the
same run: the same tree whose processes each open PIPES pipes of their own (as many fds,
none shared). Figures: restore_ms of each (restore() until the processes run; median of
--rounds), and shared_fd_us, the extra time per inherited fd ((shared - own) / fds).

usage: bench/restore_shared_fds.py [--pipes N] [--workers N] [--rounds N]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import checkpointer  # noqa: E402
from objectstore import Store  # noqa: E402

TARGET = r"""
import os, sys, time
pipes, workers, shared, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "shared", sys.argv[4]
held = [os.pipe() for _ in range(pipes)] if shared else []
for _ in range(workers):
    if os.fork() == 0:
        held = held or [os.pipe() for _ in range(pipes)]
        while True:
            time.sleep(60)
held = held or [os.pipe() for _ in range(pipes)]
with open(out, "w") as f:
    f.write("ready")
while True:
    time.sleep(60)
"""


def restore_ms(work: Path, pipes: int, workers: int, kind: str) -> float:
    """Start the tree (`kind`: shared or own), checkpoint it, kill it; the restore's time."""
    out = work / f"ready-{kind}"
    proc = subprocess.Popen([sys.executable, "-c", TARGET, str(pipes), str(workers), kind, str(out)],
                            start_new_session=True)
    restored = None
    try:
        while not out.exists():
            time.sleep(0.01)
        time.sleep(0.2)     # every worker forked (the master writes after its forks)
        store = Store.init(work / f"store-{kind}")
        checkpointer.checkpoint([proc.pid], store, "tree", tree=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        started = time.monotonic()
        restored = checkpointer.restore(store, "tree")
        elapsed = (time.monotonic() - started) * 1000
        store.close()
        return elapsed
    finally:
        if restored is not None:
            restored.kill()
        with contextlib.suppress(ProcessLookupError):   # a failure before the checkpoint's kill
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(work / f"store-{kind}", ignore_errors=True)
        out.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shared-fds-bench-"))
    times: dict[str, list[float]] = {"shared": [], "own": []}
    try:
        for _ in range(args.rounds):
            for kind in times:
                times[kind].append(restore_ms(work, args.pipes, args.workers, kind))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    inherited = 2 * args.pipes * args.workers
    print(json.dumps({"pipes": args.pipes, "workers": args.workers, "rounds": args.rounds,
                      "restore_ms": {kind: round(value, 1) for kind, value in medians.items()},
                      "shared_fd_us": round((medians["shared"] - medians["own"]) * 1000 / inherited, 1),
                      "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
