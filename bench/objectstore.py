"""Benchmark of the object store: prints ONE JSON object (see issue 2 for the keys).

    .venv/bin/python bench/objectstore.py [--quick] [--dir DIR]

Everything runs in one temporary directory (under --dir, default the system's
temporary directory), so that `disk_fsync_per_s` measures the disk the stores are on.
--quick uses smaller sizes and finishes in well under a minute; the 1M-entry
figures are measured in both modes. Numbers are wall-clock, single-threaded (the
per-page figures are CPU time).

What is measured: puts of 64 KiB chunks (log-like text for "compressible",
os.urandom for "incompressible") including the final fsync; gets of those
chunks back; the CPU per 4 KiB page of put and put_many (pages like a key-value
server's heap: put_us_per_page_4k, put_many_us_per_page_4k); commits of a
100k-entry volume with N entries changed before each; a snapshot of a volume with
one entry changed since its last commit (so it writes one path of nodes) and a clone
of a flushed root; GC of a store where almost every commit was thinned; RAM of the
in-memory chunk index after open.
"""
from __future__ import annotations

import sys
from pathlib import Path

# this file is named like the package it measures: import the package, not itself
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

from objectstore import RetentionPolicy, Store  # noqa: E402

MB = 1 << 20
CHUNK = 64 << 10


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def disk_fsync_per_s(directory: Path, seconds: float) -> float:
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.write(fd, block)
            os.fsync(fd)
            n += 1
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


def compressible_chunks(total: int, seed: int) -> list[bytes]:
    """Log-like text chunks, all different (lz4 makes them about 3x smaller)."""
    rng = random.Random(seed)
    paths = [f"/api/v1/{rng.choice(['items', 'users', 'orders'])}/{n}" for n in range(500)]
    out = []
    line_no = 0
    for _ in range(total // CHUNK):
        lines = []
        size = 0
        while size < CHUNK:
            line_no += 1
            line = (f"2026-11-29T06:{line_no // 60 % 60:02d}:{line_no % 60:02d}.{rng.randrange(1000):03d}Z "
                    f"INFO req={line_no:08d} {rng.choice(['GET', 'PUT', 'POST'])} {rng.choice(paths)} "
                    f"status={rng.choice([200, 200, 200, 404, 500])} bytes={rng.randrange(100000)}\n").encode()
            lines.append(line)
            size += len(line)
        out.append(b"".join(lines)[:CHUNK])
    return out


def bench_chunks(directory: Path, total: int) -> dict:
    results = {}
    for name, chunks in (("compressible", compressible_chunks(total, 1)),
                         ("incompressible", [os.urandom(CHUNK) for _ in range(total // CHUNK)])):
        path = directory / f"chunks-{name}"
        store = Store.init(path)

        def put_all():
            for c in chunks:
                store.put(c)
            store.packs.sync()

        secs = timed(put_all)
        results[f"put_mb_s_{name}"] = round(len(chunks) * CHUNK / MB / secs, 1)
        store.close()
        if name == "compressible":
            store = Store.open(path)
            ids = [store.put(c) for c in chunks]  # all dedup hits: nothing new is written
            secs = timed(lambda: [store.get(i) for i in ids])
            results["get_mb_s"] = round(len(ids) * CHUNK / MB / secs, 1)
            store.close()
        shutil.rmtree(path)
    return results


def filled_volume(store: Store, name: str, entries: int):
    vol = store.create_volume(name)
    value = b"i" * 40
    for n in range(entries):
        vol.put(n.to_bytes(8, "big"), value)
    store.commit(f"{entries} entries")
    return vol


def commits_per_s(store: Store, vol, dirty: int, durable: bool, seconds: float, entries: int) -> float:
    rng = random.Random(dirty)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(dirty):
            vol.put(rng.randrange(entries).to_bytes(8, "big"), b"%d" % n)
        store.commit(durable=durable)
        n += 1
    if not durable:
        store.barrier()
    return n / (time.perf_counter() - start)


def bench_commits(directory: Path, seconds: float) -> dict:
    path = directory / "commits"
    entries = 100_000
    with Store.init(path) as store:
        vol = filled_volume(store, "v", entries)
        out = {
            "commits_per_s_durable_10_dirty": commits_per_s(store, vol, 10, True, seconds, entries),
            "commits_per_s_durable_1000_dirty": commits_per_s(store, vol, 1000, True, seconds, entries),
            "commits_per_s_nondurable_10_dirty": commits_per_s(store, vol, 10, False, seconds, entries),
        }
    shutil.rmtree(path)
    return {k: round(v, 1) for k, v in out.items()}


def median_ms(fn, setup, repeat: int = 9) -> float:
    samples = []
    for _ in range(repeat):
        setup()
        samples.append(timed(fn))
    return round(statistics.median(samples) * 1000, 3)


def bench_snapshots(directory: Path, big: int) -> dict:
    path = directory / "snapshots"
    out = {}
    with Store.init(path) as store:
        for entries, label in ((1000, "1k"), (big, "1m")):
            vol = filled_volume(store, f"v{label}", entries)
            names = iter(range(10**6))

            def one_dirty_entry():  # a snapshot also writes what changed since the last commit
                vol.put((entries // 2).to_bytes(8, "big"), b"changed %d" % next(names))

            out[f"snapshot_ms_{label}_entries"] = median_ms(
                lambda: store.snapshot(f"v{label}", f"s{label}-{next(names)}"), one_dirty_entry)
            out[f"snapshot_ms_{label}_entries_clean"] = median_ms(
                lambda: store.snapshot(f"v{label}", f"s{label}-{next(names)}"), lambda: None)
            root = vol.flush()
            out[f"clone_ms_{label}_entries"] = median_ms(
                lambda: store.create_volume(f"c{label}-{next(names)}", root), lambda: None)
        out["entries_for_1m_figures"] = big
    shutil.rmtree(path)
    return out


def bench_gc(directory: Path, total: int) -> dict:
    path = directory / "gc"
    with Store.init(path) as store:
        store.retention = RetentionPolicy(keep_last=1, minutely=0, hourly=0, daily=0)
        store.packs.pack_limit = 4 * MB
        vol = store.create_volume("v")
        for n in range(total // CHUNK):  # every commit replaces the same 8 files: most data dies
            vol.put((n % 8).to_bytes(8, "big"), b"f", [store.put(os.urandom(CHUNK))])
            store.commit(durable=n % 16 == 0)
        store.barrier()
        before = store.packs.disk_bytes()
        start = time.perf_counter()
        stats = store.gc()
        secs = time.perf_counter() - start
    shutil.rmtree(path)
    return {"gc_mb_s": round(before / MB / secs, 1), "gc_bytes_freed": stats["bytes_freed"]}


def redis_like_pages(count: int, seed: int) -> list[bytes]:
    """4 KiB pages, all different, like a key-value server's heap: 64-byte slots of a
    pointer, a length and a short key and value, some slots free (zero); one page in ten
    random (lz4 makes the others about 5-10x smaller)."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        if n % 10 == 9:
            out.append(rng.randbytes(4096))
            continue
        slots = []
        for _ in range(64):
            if rng.random() < 0.2:
                slots.append(bytes(64))
                continue
            key = b"key:%012d" % rng.randrange(10**6)
            slot = (0x7F0000000000 + rng.randrange(1 << 28) * 16).to_bytes(8, "little") + \
                len(key).to_bytes(4, "little") + key + b"xxx"
            slots.append(slot.ljust(64, b"\0"))
        out.append(b"".join(slots))
    return out


def bench_pages(directory: Path, count: int) -> dict:
    """CPU microseconds per 4 KiB page stored (put + the final write-out and fsync):
    one put() per page, and put_many() a MiB at a time (as a checkpoint's image writer
    does). Median of three runs, each into a fresh store."""
    pages = redis_like_pages(count, 3)
    results = {}
    for name, store_all in (("put", lambda s: [s.put(p) for p in pages]),
                            ("put_many", lambda s: [s.put_many(pages[i:i + 256]) for i in range(0, count, 256)])):
        runs = []
        for run in range(3):
            path = directory / f"pages-{name}-{run}"
            with Store.init(path) as store:
                started = time.process_time()
                store_all(store)
                store.packs.sync()
                runs.append(time.process_time() - started)
            shutil.rmtree(path)
        results[f"{name}_us_per_page_4k"] = round(statistics.median(runs) / count * 1e6, 2)
    return results


def bench_ram(directory: Path, chunks: int) -> dict:
    path = directory / "ram"
    with Store.init(path) as store:
        for n in range(chunks):
            store.put(b"%d" % n)
        store.packs.seal_active()
    tracemalloc.start()
    store = Store.open(path)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(store.packs)
    store.close()
    shutil.rmtree(path)
    return {"bytes_ram_per_chunk": round(current / n, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where to put the benchmark stores (default: %(default)s)")
    args = parser.parse_args()
    q = args.quick
    work = Path(tempfile.mkdtemp(prefix="slsfs-bench-", dir=args.dir))
    started = time.perf_counter()
    try:
        result = {"quick": q, "disk_fsync_per_s": round(disk_fsync_per_s(work, 1.0 if q else 3.0), 1)}
        result.update(bench_chunks(work, (64 if q else 256) * MB))
        result.update(bench_pages(work, 4096 if q else 16384))
        result.update(bench_commits(work, 1.0 if q else 3.0))
        result.update(bench_snapshots(work, 1_000_000))
        result.update(bench_gc(work, (32 if q else 128) * MB))
        result.update(bench_ram(work, 50_000 if q else 200_000))
        result["seconds"] = round(time.perf_counter() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
