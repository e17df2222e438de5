"""Benchmark of the process checkpointer; prints one JSON object.

For a C target with 10 MiB, 100 MiB, 1 GiB and 2 GiB of touched heap (--quick: 10 and
100 MiB) that keeps dirtying the same 1 MiB window, it measures:

- stop_ms_full: the stop (freeze to thaw) of a full checkpoint with a fork snapshot
  (pages copied after the thaw); stop_ms_full_copy: the same with the pages copied and
  stored inside the stop;
- stop_ms_incremental (fork snapshot) and stop_ms_incremental_copy (pages stored inside
  the stop), medians over INCREMENTAL_ROUNDS checkpoints ~100 ms apart
  (stop_ms_incremental_each: every one of those stops, in order);
- checkpoint_ms_to_durable: from freeze to a durable commit, incremental, median;
- image_bytes_full / image_bytes_incremental: growth of the store directory;
- restore_ms: restore() of the newest image until the process runs again (the last
  task let go: Restored.running_at; restore_ms_returned: until restore() returned, later
  by the restorer's own CPU affinity and policy given back, and by its wait for the CPU
  the restored process took, several ms of this busy target's time slice), and
  restore_breakdown_ms: its phases (mappings, pages = read from the store and written,
  overlapped; files_and_process_state; threads_and_registers);
  restore_ms_reading_pages: of which (about) reading its pages from the store (the
  bench's pages are all distinct: no page is read from restore's repeated-page cache);
  restore_cpu_ms and restore_cpu_ms_reading_pages: the CPU time of both (all threads of
  this process; the pages are written by a second thread), steadier than wall time on
  a shared machine;
- restore_ms_lazy: restore(lazy=True) until the process runs (its private anonymous
  memory is then served on first touch and pushed in the background by a page server);
  restore_breakdown_ms_lazy: its phases; restorer_rss_mib_at_lazy_restore: this process's
  resident memory then (the page server is a fork of it: ~10 ms of CPU per GB it holds);
  lazy_ms_until_all_pages_in: from the start of that restore until the server is done;
  restore_ms_lazy_fresh_restorer: the same restore made by a new process that has only
  opened the store (as `sls restore --lazy` does): the page server is a fork of the
  restorer, and a fork costs ~40 ms per GiB the forking process holds, so this bench's
  own figure grows with what it captured before;
- restore_ms_fresh_restorer: restore() (eager) made by such a new process (up to
  EAGER_MAX_MIB), as a daemon's restore of a group under 8 MiB is after a crash;
- restore_ms_sls_restore: the restore `sls restore` of a process image makes (such a new
  process; lazy from checkpointer.LAZY_FROM_BYTES of pages, eager below), the figure to
  hold against the issue's restore targets;
- throughput_*: the target's passes over its window per second, alone and while it
  is checkpointed 10 times a second (incremental, fork snapshot, non-durable commits).
- stop_breakdown_ms_full: the phases of the full checkpoint's stop (stop_ms_full), and
  of the work after its thaw (names starting with after_thaw);
- stop_breakdown_ms: where the stop of an incremental snapshot checkpoint goes (the
  median of each phase timed by checkpointer.stopwatch over 9 checkpoints; nested phases
  are included in their outer one). Its page_copy is the wait for the pages copied on the
  other CPU meanwhile (snapshot.PageCopy.selected), the copy itself overlapping with fds
  and signals_threads_injected.
Every stop runs from the freeze call until the last task was let go (Frozen.thawed_at),
and every restore from the restore() call until the last task was let go (Restored.running_at).
The full one first arms the write tracking (Incremental.prearm, the target running; its
own short stop of the main thread is before_freeze_prearm_stop in stop_breakdown_ms_full).
Each incremental checkpoint first pre-copies (Incremental.precopy, the target running)
what was written since the previous one: its stop copies only what was written again.

`--restore-only MIB [--repeat N]` measures restore alone, N times each (default 5), from
one full checkpoint of a MIB target: restore_ms / restore_cpu_ms (eager, in this process;
up to EAGER_MAX_MIB), restore_ms_fresh_restorer, restore_ms_lazy_fresh_restorer and
restore_ms_sls_restore (each from a new process; eager up to EAGER_MAX_MIB), every value
and the median, with the load average before and after (restore figures move with it).

`--stop-only [--mib MIB...] [--repeat N]` measures the incremental stop alone (default sizes, or
each --mib): after a full checkpoint, N incremental snapshot checkpoints (default 15) as
stop_breakdown_ms takes them: their median stop_ms_incremental and phases, with the load
average before and after (a minute or less per size, where the whole bench takes several).

Usage: python bench/checkpoint.py [--quick | --mib MIB... | --restore-only MIB | --stop-only] [--repeat N]
(root; gcc on PATH)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from objectstore import Store  # noqa: E402

import checkpointer  # noqa: E402
from checkpointer import capture, freeze  # noqa: E402
from checkpointer.incremental import Incremental  # noqa: E402
from checkpointer.restore import Restored  # noqa: E402
from checkpointer.stopwatch import recording  # noqa: E402

TARGET_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    size_t size = (size_t)atol(argv[1]) << 20;
    unsigned char *heap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (heap == MAP_FAILED) return 2;
    for (size_t i = 0; i < size; i += 4096) *(size_t *)(heap + i) = i;   /* distinct pages */
    static volatile unsigned long passes;
    printf("%p\n", (void *)&passes);
    fflush(stdout);
    size_t window = size < (1 << 20) ? size : (1 << 20);
    for (;;) {
        for (size_t i = 0; i < window; i += 4096) heap[i + 8]++;
        passes++;
    }
}
"""
WINDOW_SECONDS = 1.0
# Incremental checkpoints per size (each a snapshot stop, a durable commit and a stop that
# copies): a median of 3 or 5 stops moved with one slow stop (one in five or so is 20-50%
# over the rest, often the first after the full checkpoint; 2026-12-02: --quick 1.58, 1.72,
# 2.33 ms at 10 MiB in three runs within a minute, load ~1).
INCREMENTAL_ROUNDS = 9
RESTORE_IN_FRESH_PROCESS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from objectstore import Store
import checkpointer
with Store.open(sys.argv[2], readonly=True) as store:
    started = time.perf_counter()
    restored = checkpointer.restore(store, "bench", lazy={"lazy": True, "eager": False, "default": None}[sys.argv[3]])
    ms = (restored.running_at - started) * 1000     # until it runs (restore_timed)
    restored.kill()
print(json.dumps(ms))
"""
EAGER_MAX_MIB = 256  # eager restores with --restore-only, and from a new process, up to this size (beyond: seconds each)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Target:
    def __init__(self, binary: Path, mib: int, workdir: Path):
        self.out = workdir / f"target-{mib}.out"
        self.proc = subprocess.Popen([str(binary), str(mib)], stdout=open(self.out, "w"),
                                     stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while not self.out.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the {mib} MiB target did not start")
            time.sleep(0.05)
        self.counter = int(self.out.read_text().split()[0], 16)

    def passes(self, pid: int | None = None) -> int:
        with open(f"/proc/{pid or self.proc.pid}/mem", "rb") as mem:
            mem.seek(self.counter)
            return struct.unpack("Q", mem.read(8))[0]

    def rate(self, seconds: float, during=None) -> float:
        start, began = self.passes(), time.monotonic()
        while time.monotonic() - began < seconds:
            (during or (lambda: time.sleep(0.01)))()
        return (self.passes() - start) / (time.monotonic() - began)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000


def restore_timed(restore) -> tuple[Restored, float, float]:
    """(restore()'s Restored, ms until its processes run (the last one let go), ms until it returned)."""
    start = time.perf_counter()
    restored = restore()
    return restored, (restored.running_at - start) * 1000, (time.perf_counter() - start) * 1000


def measure(binary: Path, mib: int, workdir: Path, rounds: int) -> dict:
    target = Target(binary, mib, workdir)
    store_dir = workdir / f"store-{mib}"
    store = Store.init(store_dir)
    result: dict = {}
    try:
        pid = target.proc.pid
        result["throughput_alone_per_s"] = round(target.rate(WINDOW_SECONDS))

        def stopped(capture_in_window):
            """(capture_in_window(frozen)'s result, the stop in ms: from the freeze call
            until the last task was let go)."""
            started = time.perf_counter()
            with freeze([pid], tree=True) as frozen:
                value = capture_in_window(frozen)
            return value, (frozen.thawed_at - started) * 1000

        _, result["stop_ms_full_copy"] = stopped(lambda frozen: capture(frozen, store))

        inc = Incremental()
        before = dir_bytes(store_dir)

        def snapshot_capture():
            inc.prearm([pid])      # the processes running: arm the tracking before a full capture
            inc.precopy()          # ... or copy what was written (an incremental's pages)
            return stopped(lambda frozen: inc.capture_snapshot(frozen, store))
        with recording() as phases:
            pending, result["stop_ms_full"] = snapshot_capture()
            root = pending.complete()
        result["stop_breakdown_ms_full"] = {name: round(ms, 2) for name, ms in
                                            sorted(phases.items(), key=lambda kv: -kv[1])}
        store.set_root("img/bench", root)
        store.commit("bench full", durable=True)
        result["image_bytes_full"] = dir_bytes(store_dir) - before

        stops, copy_stops, durable, sizes = [], [], [], []
        for _ in range(rounds):
            time.sleep(0.1)
            before = dir_bytes(store_dir)
            started = time.perf_counter()
            pending, stop = snapshot_capture()
            store.set_root("img/bench", pending.complete())
            store.commit("bench incremental", durable=True)
            durable.append((time.perf_counter() - started) * 1000)
            stops.append(stop)
            sizes.append(dir_bytes(store_dir) - before)
            time.sleep(0.1)

            inc.precopy()
            root, stop = stopped(lambda frozen: inc.capture(frozen, store))
            copy_stops.append(stop)
        store.set_root("img/bench", root)
        store.commit("bench last", durable=True)
        result["stop_ms_incremental"] = statistics.median(stops)
        result["stop_ms_incremental_each"] = [round(stop, 2) for stop in stops]
        result["stop_ms_incremental_copy"] = statistics.median(copy_stops)
        result["checkpoint_ms_to_durable"] = statistics.median(durable)
        result["image_bytes_incremental"] = int(statistics.median(sizes))
        result["incremental_pages"] = inc.last_pages
        result["stop_breakdown_ms"] = breakdown(pid, inc, store)

        next_at = [time.monotonic()]

        def checkpoint_10hz():
            if time.monotonic() >= next_at[0]:
                next_at[0] += 0.1
                store.set_root("img/bench", snapshot_capture()[0].complete())
                store.commit("bench 10/s", durable=False)
            else:
                time.sleep(0.005)
        result["throughput_checkpointed_10_per_s"] = round(target.rate(WINDOW_SECONDS * 2, checkpoint_10hz))
        store.barrier()
        inc.close()
        target.kill()

        with recording() as phases:
            cpu = time.process_time()
            restored, result["restore_ms"], result["restore_ms_returned"] = restore_timed(
                lambda: checkpointer.restore(store, "bench"))
            result["restore_cpu_ms"] = (time.process_time() - cpu) * 1000
        result["restore_breakdown_ms"] = {name: round(ms, 2) for name, ms in phases.items()}
        result["restored_runs"] = _runs_on(target, restored.pids[0])
        restored.kill()
        result["restorer_rss_mib_at_lazy_restore"] = rss_mib()
        started = time.perf_counter()
        with recording() as phases:
            restored, result["restore_ms_lazy"], _ = restore_timed(lambda: checkpointer.restore(store, "bench", lazy=True))
        result["restore_breakdown_ms_lazy"] = {name: round(ms, 2) for name, ms in phases.items()}
        result["lazy_restored_runs"] = _runs_on(target, restored.pids[0])
        restored.wait_pages_in(timeout=600)
        result["lazy_ms_until_all_pages_in"] = (time.perf_counter() - started) * 1000
        restored.kill()
        result["restore_ms_lazy_fresh_restorer"] = restore_in_fresh_process(store_dir, lazy=True)
        result["restore_ms_sls_restore"] = restore_in_fresh_process(store_dir, lazy=None)
        if mib <= EAGER_MAX_MIB:
            result["restore_ms_fresh_restorer"] = restore_in_fresh_process(store_dir, lazy=False)
        image = checkpointer.load_image(store, "bench")
        cpu = time.process_time()
        _, result["restore_ms_reading_pages"] = timed(
            lambda: [len(run) for p in image.processes for _, run in image.page_vectors(p["pid"], skip_zero=True)])
        result["restore_cpu_ms_reading_pages"] = (time.process_time() - cpu) * 1000
    finally:
        if target.proc.poll() is None:
            target.kill()
        store.close()
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


def rss_mib() -> int:
    """This process's resident memory: a lazy restore forks its page server from the
    restorer, and a fork costs more the more memory the forking process holds."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


def restore_in_fresh_process(store_dir: Path, lazy: bool | None) -> float:
    """restore() of the image, in ms, made by a new process that has only opened the store
    (as `sls restore` does): the page server of a lazy restore is a fork of the restorer,
    whose cost grows with what the restorer holds; an eager one is the first restore of
    that process (nothing of the image's tree cached yet), as a daemon's restore of a
    small group after a crash is. `lazy` None: as `sls restore` of a process image
    chooses (lazy from checkpointer.LAZY_FROM_BYTES of pages)."""
    how = {True: "lazy", False: "eager", None: "default"}[lazy]
    return json.loads(subprocess.run(
        [sys.executable, "-c", RESTORE_IN_FRESH_PROCESS, str(Path(__file__).resolve().parent.parent),
         str(store_dir), how], check=True, capture_output=True, text=True).stdout)


def _runs_on(target: Target, pid: int) -> bool:
    """Does the restored target make passes over its window (within 60 s)?"""
    first, deadline = target.passes(pid), time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if target.passes(pid) > first:
            return True
    return False


def breakdown(pid: int, inc: Incremental, store: Store, rounds: int = 9) -> dict:
    """Incremental snapshot checkpoints ~50 ms apart: the median of each phase of their
    stop (checkpointer/stopwatch.py; "other" = the rest of the stop; "stop" ends when the
    last task was let go, after_thaw_unpin comes later) and of the work after the thaw."""
    samples: list[dict[str, float]] = []
    for _ in range(rounds):
        time.sleep(0.05)
        inc.precopy()
        started = time.perf_counter()
        with recording() as phases:
            with freeze([pid], tree=True) as frozen:
                pending = inc.capture_snapshot(frozen, store)
        stop = (frozen.thawed_at - started) * 1000
        done = time.perf_counter()
        pending.complete()
        sample = dict(phases)
        sample["other"] = stop - sum(ms for name, ms in phases.items() if name != "after_thaw_unpin")
        sample["stop"] = stop
        sample["after_thaw_store_copy_reap"] = (time.perf_counter() - done) * 1000
        samples.append(sample)
    names = {name for sample in samples for name in sample}
    medians = {name: round(statistics.median(s.get(name, 0.0) for s in samples), 2) for name in names}
    return dict(sorted(medians.items(), key=lambda kv: -kv[1]))


def restore_only(binary: Path, mib: int, workdir: Path, repeat: int) -> dict:
    """--restore-only: restore figures alone, `repeat` times each, from one full checkpoint."""
    target = Target(binary, mib, workdir)
    store_dir = workdir / f"store-{mib}"
    store = Store.init(store_dir)
    result: dict = {"load_before": os.getloadavg()[0]}
    try:
        with freeze([target.proc.pid], tree=True) as frozen:
            store.set_root("img/bench", capture(frozen, store))
        store.commit("bench full", durable=True)
        target.kill()
        walls, cpus = [], []
        for _ in range(repeat if mib <= EAGER_MAX_MIB else 0):
            cpu = time.process_time()
            restored, wall, _ = restore_timed(lambda: checkpointer.restore(store, "bench"))
            cpus.append((time.process_time() - cpu) * 1000)
            walls.append(wall)
            if not _runs_on(target, restored.pids[0]):
                raise SystemExit("bench: the restored target does not run")
            restored.kill()
        lazy = [restore_in_fresh_process(store_dir, lazy=True) for _ in range(repeat)]
        default = [restore_in_fresh_process(store_dir, lazy=None) for _ in range(repeat)]
        fresh = [restore_in_fresh_process(store_dir, lazy=False) for _ in range(repeat if mib <= EAGER_MAX_MIB
                                                                                else 0)]
    finally:
        if target.proc.poll() is None:
            target.kill()
        store.close()
    for name, values in (("restore_ms", walls), ("restore_cpu_ms", cpus), ("restore_ms_fresh_restorer", fresh),
                         ("restore_ms_lazy_fresh_restorer", lazy), ("restore_ms_sls_restore", default)):
        if values:
            result[name] = [round(v, 2) for v in values]
            result[f"{name}_median"] = round(statistics.median(values), 2)
    result["load_after"] = os.getloadavg()[0]
    return result


def stop_only(binary: Path, mib: int, workdir: Path, repeat: int) -> dict:
    """--stop-only: the incremental stop alone, `repeat` checkpoints after a full one."""
    target = Target(binary, mib, workdir)
    store = Store.init(workdir / f"store-{mib}")
    inc = Incremental()
    result: dict = {"load_before": os.getloadavg()[0]}
    try:
        inc.prearm([target.proc.pid])
        with freeze([target.proc.pid], tree=True) as frozen:
            pending = inc.capture_snapshot(frozen, store)
        pending.complete()
        phases = breakdown(target.proc.pid, inc, store, rounds=repeat)
    finally:
        inc.close()
        target.kill()
        store.close()
    return {**result, "stop_ms_incremental": phases["stop"], "stop_breakdown_ms": phases,
            "load_after": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 MiB and 100 MiB only (under a minute)")
    parser.add_argument("--restore-only", type=int, metavar="MIB", help="restore figures alone, for a MIB target")
    parser.add_argument("--repeat", type=int, help="restores of each kind with --restore-only (default 5), "
                        "checkpoints with --stop-only (default 15)")
    parser.add_argument("--stop-only", action="store_true", help="the incremental stop alone, for each size")
    parser.add_argument("--mib", type=int, action="append", help="measure only targets of this many MiB (repeatable)")
    args = parser.parse_args()
    sizes = args.mib or ([10, 100] if args.quick else [10, 100, 1024, 2048])
    with tempfile.TemporaryDirectory(prefix="sls-bench-ckpt-") as tmp:
        workdir = Path(tmp)
        binary = workdir / "dirtier"
        (workdir / "dirtier.c").write_text(TARGET_C)
        subprocess.run(["gcc", "-O1", "-o", str(binary), str(workdir / "dirtier.c")], check=True)
        if args.restore_only:
            print(json.dumps({"benchmark": "checkpoint restore", "mib": args.restore_only,
                              **restore_only(binary, args.restore_only, workdir, args.repeat or 5)}, indent=2))
            return 0
        if args.stop_only:
            print(json.dumps({"benchmark": "checkpoint stop", "dirty_per_checkpoint_bytes": 1 << 20,
                              "sizes": {f"{mib}MiB": stop_only(binary, mib, workdir, args.repeat or 15)
                                        for mib in sizes}}, indent=2))
            return 0
        results = {f"{mib}MiB": measure(binary, mib, workdir, rounds=INCREMENTAL_ROUNDS) for mib in sizes}
    print(json.dumps({"benchmark": "checkpoint", "quick": args.quick, "dirty_per_checkpoint_bytes": 1 << 20,
                      "load_average": os.getloadavg()[0], "sizes": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
