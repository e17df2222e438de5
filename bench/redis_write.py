"""Benchmark of what a group checkpoint costs after the thaw on Redis; prints one JSON object.

bench/redis_stop.py's setting (redis-server with --redis-mib MiB under redis-benchmark,
checkpointed --checkpoints times at --hz through slsfs.group_checkpoint.take, no daemon),
measuring the daemon's CPU on the other side of the stop: Captured.write (the pages
stored by put_many, the image's finish) and the barrier (store commit, pack write and
fdatasync, the prefix or sealed pack index), each checkpoint followed by its barrier as
in the daemon. CPU is this process's (all its threads), steadier than wall time on a
shared machine; run it twice, and on the same load, before believing a difference.

Printed: write_cpu_ms_median, finish_cpu_ms_median (ImageWriter.finish, inside write),
barrier_cpu_ms_mean (a mean: sealing a pack every ~25 checkpoints is part of the cost),
write_wall_ms_median, pages_median, load averages. The first 3 checkpoints are left out.
Usage: python bench/redis_write.py [--checkpoints N] [--hz HZ] [--redis-mib N]   (root)
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)              # bench/objectstore.py must not shadow the objectstore package

import trio  # noqa: E402

from checkpointer.image import ImageWriter  # noqa: E402
from checkpointer.incremental import Incremental  # noqa: E402
from objectstore import Store  # noqa: E402
from slsfs import group_checkpoint  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_stop import WARM_UP, arguments, redis_under_benchmark, seal_without_mount  # noqa: E402


def checkpoints(pid: int, store: Store, count: int, hz: float) -> dict[str, list[float]]:
    """`count` checkpoints of `pid`, each written and made durable: the cost of each step."""
    tracking = Incremental()
    costs: dict[str, list[float]] = {"write_cpu": [], "write_wall": [], "finish_cpu": [], "barrier_cpu": [], "pages": []}
    finish = ImageWriter.finish

    def timed_finish(writer: ImageWriter, *args):
        started = time.process_time()
        try:
            return finish(writer, *args)
        finally:
            costs["finish_cpu"].append((time.process_time() - started) * 1000)
    ImageWriter.finish = timed_finish
    try:
        with seal_without_mount() as seal:
            for _ in range(count):
                writer = ImageWriter(store, tracking.parent)
                captured, = group_checkpoint.take([group_checkpoint.Member([pid], writer, tracking)], seal)
                wall, cpu = time.perf_counter(), time.process_time()
                tracking.parent = trio.run(captured.write)
                costs["write_wall"].append((time.perf_counter() - wall) * 1000)
                costs["write_cpu"].append((time.process_time() - cpu) * 1000)
                cpu = time.process_time()
                store.commit("checkpoint", durable=False)
                store.barrier()
                costs["barrier_cpu"].append((time.process_time() - cpu) * 1000)
                costs["pages"].append(writer.pages)
                time.sleep(1 / hz)
    finally:
        ImageWriter.finish = finish
        tracking.close()
    return {name: values[WARM_UP:] for name, values in costs.items()}


def main() -> int:
    args, out = arguments("redis_write")
    with redis_under_benchmark("redis-write", args.redis_mib) as (pid, store):
        costs = checkpoints(pid, store, args.checkpoints, args.hz)
    out.update({
        "write_cpu_ms_median": round(statistics.median(costs["write_cpu"]), 2),
        "finish_cpu_ms_median": round(statistics.median(costs["finish_cpu"]), 2),
        "barrier_cpu_ms_mean": round(statistics.mean(costs["barrier_cpu"]), 2),
        "write_wall_ms_median": round(statistics.median(costs["write_wall"]), 2),
        "pages_median": statistics.median(costs["pages"]),
        "load_after": os.getloadavg()[0],
    })
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
