"""Benchmark of a group checkpoint's stop on Redis, without the daemon; prints one JSON object.

A redis-server (Debian's, loopback, no persistence) with a dataset of --redis-mib MiB
(DEBUG POPULATE) runs under redis-benchmark (SET, 50 clients, random keys) while this
process checkpoints it --checkpoints times, --hz per second, through the daemon's own
code path (slsfs.group_checkpoint.take: pre-copy, freeze, incremental page selection,
capture, arm, page copy or fork snapshot, thaw; then Captured.write into a store of its
own). Redis's stdout and stderr go to /dev/null: a file the bench's stderr was redirected
to would be a file the capture keeps (a written file in /tmp), which costs a read of
/proc/locks in every stop (7-16 ms here: an RCU grace period) and is not Redis's. What
the daemon adds is left out: there is no syncfs (no file system to drain),
the file system seal is a no-op, and there is no trio thread or FUSE serving to compete
with. So the figures move less with the machine's load than bench/groups.py's, and a
change to the capture side shows up in them with fewer runs.

Printed: stop_ms_median / _p90 (the first 3 checkpoints, full or warming up, are left
out), stop_phases_ms_median (the median of each checkpointer.stopwatch phase: nested
phases are included in their outer one; "before_freeze_precopy" and "after_thaw_*" are not
part of the stop), pages_median (pages stored per checkpoint), and the load average
before and after.
Usage: python bench/redis_stop.py [--checkpoints N] [--hz HZ] [--redis-mib N]   (root)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)              # bench/objectstore.py must not shadow the objectstore package

import trio  # noqa: E402

from checkpointer.image import ImageWriter  # noqa: E402
from checkpointer.incremental import Incremental  # noqa: E402
from objectstore import ChunkId, Store  # noqa: E402
from slsfs import group_checkpoint  # noqa: E402

WARM_UP = 3


def redis_cli(port: int, *args: str) -> str:
    result = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=300)
    return result.stdout.strip()


def start_redis(work: Path, mib: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--enable-debug-command", "yes"],
                              cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while redis_cli(port, "PING") != "PONG":
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"bench: redis-server on port {port} does not answer")
        time.sleep(0.05)
    redis_cli(port, "DEBUG", "POPULATE", str(mib * 1024), "fill", "1000")
    return server, port


@contextmanager
def seal_without_mount() -> Iterator[group_checkpoint.Seal]:
    """A group checkpoint's seal for a process outside any mount: nothing to write back and
    a made-up files commit, so the seal is answered in the calling thread at once (as the
    daemon's is for a group that writes no file)."""
    yield group_checkpoint.Seal(NoMount())


class NoMount:
    """No mount (group_checkpoint.SealedFiles): nothing to write back, the files a made-up
    commit that holds them already; nothing else is ever asked."""

    def syncfs_needed(self) -> bool:
        return False

    def files_unchanged(self) -> tuple[int, ChunkId]:
        return 0, ChunkId(bytes(16))

    def request_sync(self) -> None:
        raise AssertionError("no mount to sync")

    def synced_now(self, request) -> bool:
        raise AssertionError("no mount to sync")

    async def sync(self, request) -> None:
        raise AssertionError("no mount to sync")

    def commit_files(self) -> tuple[int, ChunkId]:
        raise AssertionError("no files to commit")


def checkpoints(pid: int, store: Store, count: int, hz: float) -> tuple[list[float], list[dict], list[int]]:
    """`count` checkpoints of `pid` as the daemon takes them: (stops, phases, pages) of each."""
    tracking = Incremental()
    stops, phases, pages = [], [], []
    try:
        with seal_without_mount() as seal:
            for _ in range(count):
                writer = ImageWriter(store, tracking.parent)
                captured, = group_checkpoint.take([group_checkpoint.Member([pid], writer, tracking)], seal)
                tracking.parent = trio.run(captured.write)
                stops.append(captured.stop_ms)
                phases.append(captured.stop_phases_ms)
                pages.append(writer.pages)
                time.sleep(1 / hz)
    finally:
        tracking.close()
    return stops[WARM_UP:], phases[WARM_UP:], pages[WARM_UP:]


def arguments(name: str) -> tuple[argparse.Namespace, dict]:
    """The command line shared by the Redis capture benchmarks, and the start of their
    JSON record."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=60)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--redis-mib", type=int, default=16)
    args = parser.parse_args()
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        raise SystemExit("bench: redis-server and redis-benchmark are needed (make setup installs them)")
    return args, {"benchmark": name, "checkpoints": args.checkpoints, "hz": args.hz,
                  "redis_dataset_mib": args.redis_mib, "load_before": os.getloadavg()[0]}


@contextmanager
def redis_under_benchmark(name: str, mib: int) -> Iterator[tuple[int, Store]]:
    """A Redis server holding `mib` MiB under redis-benchmark SETs over loopback, and a new
    store beside it: (the server's pid, the store); all stopped and removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=f"slsfs-bench-{name}-"))
    server = load = None
    try:
        server, port = start_redis(work, mib)
        load = subprocess.Popen(["redis-benchmark", "-p", str(port), "-t", "set", "-n", "100000000", "-c", "50",
                                 "-r", "100000", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        store = Store.init(work / "store")
        try:
            yield server.pid, store
        finally:
            store.close()
    finally:
        for proc in (load, server):
            if proc is not None:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    args, out = arguments("redis_stop")
    with redis_under_benchmark("redis-stop", args.redis_mib) as (pid, store):
        stops, phases, pages = checkpoints(pid, store, args.checkpoints, args.hz)
    names = sorted({name for p in phases for name in p})
    out.update({
        "stop_ms_median": round(statistics.median(stops), 2),
        "stop_ms_p90": round(sorted(stops)[int(len(stops) * 0.9)], 2),
        "stop_phases_ms_median": {name: round(statistics.median(p.get(name, 0.0) for p in phases), 3)
                                  for name in names},
        "pages_median": statistics.median(pages),
        "load_after": os.getloadavg()[0],
    })
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
