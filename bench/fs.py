"""File-system benchmark: slsfs against a plain directory on the same disk; prints one JSON object.

    .venv/bin/python bench/fs.py [--quick] [--dir DIR] [--no-writeback-cache]

Measures sequential write/read in 1 MiB blocks (with ratios to the plain directory; the
write repeats one random block, which the store keeps once: `seq_write_unique_mb_s` and
its ratio write blocks that all differ, so the store writes and syncs every byte too),
a durable copy of that file with copy_file_range(2), as `cp` makes it (`copy_mb_s`,
`copy_ratio`: slsfs shares whole blocks, ext4 copies the bytes),
4 KiB random read/write IOPS, a small-file metadata test (create+write 4 KiB+close,
stat, unlink per second; first stats once more with the bench and the daemon on one
CPU, `stats_one_cpu_per_s`, see first_stats_on_one_cpu), snapshot_ms and clone_ms of
trees of N files, diff_ms of two checkpoints of such a tree that differ in one file
(and diff_rq_ms, `diff -rq` of the two checkpoints' trees, for reference), checkpoints
per second under a steady small-file write load (over 10 s, 3 with --quick; at the default
10 ms interval 100 is the most), and
SQLite's rows per second in a loop of one-row transactions (`sqlite_rows_per_s`, its
ratio to the plain directory: rollback journal, synchronous=FULL, so three durable
fsyncs and ~30 FUSE requests a row on slsfs). `--quick` uses smaller sizes
(finishes in well under 90 s). seq_read is the hot read (page cache, median of 5 after
two warm-up reads, see seq); first_read is the read right after writing; seq_reread the
hot read once the file's pages were dropped and read back (see seq: why it differs);
`*_cpu_ms_per_gib` the reading thread's CPU time per GiB of those reads (their
`*_cpu_ratio`: the plain directory's over slsfs's, a rate ratio that the machine's load
moves far less than the rates'), `*_folio_kib` the mean size of the page-cache folios
that held the file then (bench/folios.py; null without root).
`fsync_writers_files_per_s`: files that FSYNC_WRITERS processes at once write, close and
fsync (`fsync_writers_ratio` to the plain directory), with the mount's commits per file
(`fsync_writers_commits_per_file`: below 1 when fsyncs ride on each other's commits).
`daemon_cpu_ms_per_unique_mib` and `daemon_cpu_us_per_sqlite_row` are the mount daemon's
CPU time per MiB of the unique-data write and per SQLite row: steadier than the rates
on a busy machine. `fuse_requests_per_sqlite_row`: the requests the kernel sent the
daemon per row, by kind (bench/fuse_requests.py; null without root or tracefs).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)          # not bench/: bench/objectstore.py would shadow the package
from mount.control import request  # noqa: E402  (needs the path above)
from bench.fuse_requests import FuseRequests  # noqa: E402
from bench.folios import cached_folio_kib  # noqa: E402
SLS_MAIN = "import sys; from slsfs.cli import main; sys.exit(main())"
MiB = 1024 * 1024
GiB = 1024 * MiB
WARM_PASSES = 2
HOT_PASSES = 5
DIFF_REFERENCE_FILES = 10_000


def sls(*args) -> str:
    return subprocess.run([sys.executable, "-c", SLS_MAIN, *map(str, args)], check=True,
                          capture_output=True, text=True, cwd=ROOT).stdout


def mount(store: Path, mnt: Path, daemon_args: list[str]) -> None:
    """`sls mount`, or with `daemon_args` the mount daemon started directly with them."""
    if not daemon_args:
        sls("mount", store, mnt)
        return
    ready_r, ready_w = os.pipe()
    subprocess.Popen([sys.executable, "-m", "mount.daemon", str(store), str(mnt), *daemon_args,
                      "--ready-fd", str(ready_w)], pass_fds=[ready_w], cwd=ROOT,
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(ready_w)
    with os.fdopen(ready_r) as ready:
        answer = ready.readline().strip()
    if answer != "ok":
        raise SystemExit(f"mount failed: {answer or 'the daemon exited'}")


def read_all(path: Path) -> tuple[float, float]:
    """(MB/s, the reading thread's CPU milliseconds per GiB) of one sequential read of
    `path` in 1 MiB blocks. A hot read asks the daemon nothing and waits for nothing but
    the CPU, so its CPU time is what the file system costs; the rate adds the time the
    reader waited for a CPU, which on this shared 2-CPU machine swings 2x between runs."""
    start, cpu = time.perf_counter(), time.thread_time()
    with open(path, "rb") as f:
        while f.read(MiB):
            pass
    cpu, seconds = time.thread_time() - cpu, time.perf_counter() - start
    size = path.stat().st_size
    return size / MiB / seconds, cpu * 1e3 * GiB / size


def hot_passes(path: Path, warm_ups: int) -> tuple[float, float]:
    """Medians of HOT_PASSES reads' (MB/s, CPU ms per GiB) after `warm_ups` reads."""
    for _ in range(warm_ups):
        read_all(path)
    passes = [read_all(path) for _ in range(HOT_PASSES)]
    return statistics.median(p[0] for p in passes), statistics.median(p[1] for p in passes)


def seq(path: Path, size: int) -> dict[str, float | None]:
    """Sequential write, the first read after it, the hot read and the hot re-read.

    The hot read (`seq_read_mb_s`, `seq_read_cpu_ms_per_gib`) is the median of HOT_PASSES
    reads after WARM_PASSES warm-ups (the first read after the write counts as one), on
    both file systems alike: the passes after a refill ramp up over 2-3 passes on both
    (measured; plausibly each folio's LRU activation at its second use).

    A hot read asks the daemon nothing (traced: one OPEN, GETATTR, IOCTL and RELEASE per
    pass, no READ, also right after the write: tests/mount/test_hot_read.py): its cost is
    the kernel's copy out of the page cache, folio by folio. `seq_read_folio_kib` is the
    mean size of the folios that hold the file then (bench/folios.py): on Linux 6.18 FUSE
    caches every file in 4 KiB folios, by its write path and its readahead alike (fs/fuse/
    file.c fuse_init_file_inode sets no folio order; traced: every folio added is order
    0), where ext4's write leaves 1 MiB ones: 256 folios to walk per MiB instead of one.
    perf of 1 GiB hot reads (cpu-clock samples): ext4 1,326, slsfs 1,704, of which
    _copy_to_iter 1,178 / 1,302, filemap_get_read_batch 4 / 180, filemap_read - / 42,
    folio_mark_accessed - / 22, and no fuse function at all. In six interleaved rounds of
    1 GiB at load 6-9 the reader's CPU per GiB gave ratios of 0.58-0.69 (median 0.64)
    where the rates gave 0.25-1.30: the CPU ratio is the figure to compare runs by.

    The hot re-read is the same after the file's cached pages were dropped (fadvise
    DONTNEED) and read back in: ext4's readahead then makes folios of growing orders
    (0, 2, 4, ...: ~70 KiB on average over 64 MiB), FUSE's still 4 KiB ones."""
    block = os.urandom(MiB)
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    write = size / MiB / (time.perf_counter() - start)
    first, _ = read_all(path)
    hot, hot_cpu = hot_passes(path, WARM_PASSES - 1)
    hot_folio = cached_folio_kib(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    reread, reread_cpu = hot_passes(path, WARM_PASSES)
    return {"seq_write_mb_s": round(write, 1), "first_read_mb_s": round(first, 1),
            "seq_read_mb_s": round(hot, 1), "seq_read_cpu_ms_per_gib": round(hot_cpu, 1),
            "seq_read_folio_kib": _rounded(hot_folio),
            "seq_reread_mb_s": round(reread, 1), "seq_reread_cpu_ms_per_gib": round(reread_cpu, 1),
            "seq_reread_folio_kib": _rounded(cached_folio_kib(path))}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def unique_write(path: Path, size: int, daemon: int | None = None) -> tuple[float, float]:
    """MB/s of writing `size` random bytes (made before the clock starts: no block of it
    repeats or compresses) in 1 MiB blocks and fsyncing them: the store keeps every byte.
    Also the CPU milliseconds per MiB of the `daemon` (pid, or None): on a shared 2-core
    machine the rate follows the load, the daemon's CPU per MiB much less."""
    data = memoryview(os.urandom(size))
    cpu = cpu_seconds(daemon)
    start = time.perf_counter()
    with open(path, "wb") as f:
        for offset in range(0, size, MiB):
            f.write(data[offset:offset + MiB])
        f.flush()
        os.fsync(f.fileno())
    rate = size / MiB / (time.perf_counter() - start)
    return rate, (cpu_seconds(daemon) - cpu) / (size / MiB) * 1e3


def sqlite_rows(directories: dict[str, Path], seconds: float, rounds: int = 6,
                daemons: dict[str, int] | None = None) -> dict[str, tuple[float, float]]:
    """Rows per second that SQLite commits in each of `directories`, one row per
    transaction (bench/groups.py's loop, run in this process), over `seconds` each,
    taken in `rounds` short windows that alternate between the directories: their
    disk is shared with other work, and SQLite's three fsyncs a row follow its load
    within seconds (sequential windows gave ratios from 0.2 to 3 on a busy machine).
    Returns (rows per second, CPU microseconds per row of the directory's daemon in
    `daemons`, 0 without one)."""
    dbs = {name: sqlite3.connect(str(directory / "bench.db"), isolation_level=None)
           for name, directory in directories.items()}
    rows = dict.fromkeys(dbs, 0)
    spent = dict.fromkeys(dbs, 0.0)
    cpu = dict.fromkeys(dbs, 0.0)
    daemons = daemons or {}
    try:
        for db in dbs.values():
            db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, payload TEXT)")
        for _ in range(rounds):
            for name, db in dbs.items():
                cpu[name] -= cpu_seconds(daemons.get(name))
                start = time.perf_counter()
                while time.perf_counter() - start < seconds / rounds:
                    insert_row(db)
                    rows[name] += 1
                spent[name] += time.perf_counter() - start
                cpu[name] += cpu_seconds(daemons.get(name))
    finally:
        for db in dbs.values():
            db.close()
    return {name: (rows[name] / spent[name], cpu[name] / rows[name] * 1e6) for name in dbs}


def insert_row(db: sqlite3.Connection) -> None:
    """One row in one transaction (bench/groups.py's loop)."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (NULL, ?)", ("x" * 200,))
    db.execute("COMMIT")


def sqlite_requests(directory: Path, rows: int) -> dict[str, float] | None:
    """The FUSE requests per row of sqlite_rows' loop, by kind (bench.fuse_requests: the
    kernel's own count, None where it cannot be read), over `rows` rows after a few
    unmeasured ones (the first transactions create the table and the journal's entry)."""
    db = sqlite3.connect(str(directory / "requests.db"), isolation_level=None)
    try:
        db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, payload TEXT)")
        for _ in range(5):
            insert_row(db)
        with FuseRequests(directory) as seen:
            for _ in range(rows):
                insert_row(db)
    finally:
        db.close()
    return seen.per(rows)


FSYNC_WRITERS = 4
FSYNC_WRITER = r"""
import os, sys, time
directory, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
data, n = os.urandom(4096), 0
while time.monotonic() < end:
    path = os.path.join(directory, f"f{n % 200}")
    with open(path, "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_WRONLY)     # written and closed, then fsynced: another
    os.fsync(fd)                        # writer's fsync may have made it durable already
    os.close(fd)
    n += 1
print(n)
"""


def fsync_writers(directories: dict[str, Path], seconds: float, rounds: int = 4,
                  stores: dict[str, Path] | None = None) -> dict[str, tuple[float, float | None]]:
    """Files per second that FSYNC_WRITERS processes at once write (4 KiB), close and
    fsync, each in its own directory of each of `directories`, in `rounds` windows that
    alternate between them (as sqlite_rows), and per file the commits of the mount
    whose store is in `stores` (mount.durable_points: an fsync of a file that another
    writer's fsync made durable commits nothing; None without a store)."""
    files = dict.fromkeys(directories, 0)
    spent = dict.fromkeys(directories, 0.0)
    commits = dict.fromkeys(directories, 0)
    stores = stores or {}
    for name, directory in directories.items():
        for k in range(FSYNC_WRITERS):
            (directory / "fsync_writers" / str(k)).mkdir(parents=True)
    for _ in range(rounds):
        for name, directory in directories.items():
            store = stores.get(name)
            before = request(store, "status")["checkpoints_taken"] if store else 0
            start = time.perf_counter()
            writers = [subprocess.Popen([sys.executable, "-c", FSYNC_WRITER, str(directory / "fsync_writers" / str(k)),
                                         str(seconds / rounds)], stdout=subprocess.PIPE, text=True)
                       for k in range(FSYNC_WRITERS)]
            files[name] += sum(int(w.communicate()[0]) for w in writers)
            spent[name] += time.perf_counter() - start
            if store:
                commits[name] += request(store, "status")["checkpoints_taken"] - before
    for directory in directories.values():
        shutil.rmtree(directory / "fsync_writers")
    return {name: (files[name] / spent[name], commits[name] / files[name] if name in stores else None)
            for name in directories}


def copy_file(source: Path, copy: Path) -> float:
    """MB/s of a durable copy of `source` made with copy_file_range(2), as `cp` makes it (the
    copy fsynced); the copy is checked, then removed. On slsfs whole blocks are shared (a
    reflink), on ext4 the kernel copies the bytes."""
    started = time.perf_counter()
    with open(source, "rb") as src, open(copy, "wb") as dst:
        size, done = os.fstat(src.fileno()).st_size, 0
        while done < size:
            done += os.copy_file_range(src.fileno(), dst.fileno(), size - done)
        os.fsync(dst.fileno())
    seconds = time.perf_counter() - started
    with open(source, "rb") as a, open(copy, "rb") as b:
        while (block := a.read(MiB)) or b.read(1):
            assert block == b.read(len(block)), f"{copy} differs from {source}"
    os.unlink(copy)
    return size / MiB / seconds


def random_io(path: Path, ops: int) -> tuple[float, float]:
    size = path.stat().st_size
    offsets = [random.randrange(0, size // 4096) * 4096 for _ in range(ops)]
    data = os.urandom(4096)
    fd = os.open(path, os.O_RDWR)
    try:
        start = time.perf_counter()
        for off in offsets:
            os.pwrite(fd, data, off)
        write = ops / (time.perf_counter() - start)
        start = time.perf_counter()
        for off in offsets:
            os.pread(fd, 4096, off)
        read = ops / (time.perf_counter() - start)
    finally:
        os.close(fd)
    return read, write


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time used so far by process `pid` (0 for None)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metadata(directory: Path, count: int, daemon: int | None = None) -> dict:
    """Per second: create+write 4 KiB+close, stat, stat again, unlink of `count` files, and
    `count` stats of 200 missing names; with the pid of a `daemon`, also its CPU microseconds
    per operation (steadier than rates on a busy machine: other load hardly changes them)."""
    directory.mkdir()
    data = os.urandom(4096)
    names = [directory / f"f{i:06d}" for i in range(count)]

    def create(name: Path) -> None:
        with open(name, "wb") as f:
            f.write(data)

    def probe(name: Path) -> None:
        if name.exists():
            raise AssertionError(f"{name} should not exist")

    # programs probe the same missing names again and again (Python's imports, PATH)
    missing = [directory / f"missing{i % 200}" for i in range(count)]
    result = {}
    # stats: the first stat after the close (the kernel asks the daemon once: a close
    # invalidates the cached block count); restats: files unchanged since, from the cache
    for verb, action, targets in (("creates", create, names), ("stats", os.stat, names),
                                  ("restats", os.stat, names), ("missing_stats", probe, missing),
                                  ("unlinks", os.unlink, names)):
        cpu = cpu_seconds(daemon)
        start = time.perf_counter()
        for name in targets:
            action(name)
        result[f"{verb}_per_s"] = round(count / (time.perf_counter() - start))
        if daemon is not None:
            result[f"daemon_cpu_us_per_{verb[:-1]}"] = round((cpu_seconds(daemon) - cpu) / count * 1e6, 1)
    return result


def first_stats_on_one_cpu(directory: Path, count: int, daemon: int) -> dict:
    """First stats (one GETATTR each) of new files with this process and every thread
    of the `daemon` pinned to one CPU, then both set free again; `count` files split
    over the CPUs we may use, one CPU after the other; the best CPU's rate is reported.

    Every first stat after a close is one round trip to the daemon, and its rate swings
    about 5x with where the two processes run: on two idle vCPUs each request and each
    answer wakes the other vCPU (measured here: 0.6-14k/s on two CPUs, 22-28k/s on one).
    This figure is the daemon-bound rate on the least busy CPU."""
    directory.mkdir()
    data = os.urandom(4096)
    everywhere = os.sched_getaffinity(0)
    per_cpu = max(1, count // len(everywhere))
    best: tuple[float, float] = (0.0, 0.0)
    for cpu_number in sorted(everywhere):
        names = [directory / f"c{cpu_number}-{i:06d}" for i in range(per_cpu)]
        for name in names:
            with open(name, "wb") as f:
                f.write(data)
        threads = [int(t) for t in os.listdir(f"/proc/{daemon}/task")]
        saved = {tid: os.sched_getaffinity(tid) for tid in threads}
        try:
            for tid in threads:
                os.sched_setaffinity(tid, {cpu_number})
            os.sched_setaffinity(0, {cpu_number})
            cpu = cpu_seconds(daemon)
            start = time.perf_counter()
            for name in names:
                os.stat(name)
            rate = per_cpu / (time.perf_counter() - start)
            cpu_us = (cpu_seconds(daemon) - cpu) / per_cpu * 1e6
        finally:
            os.sched_setaffinity(0, everywhere)
            for tid, cpus in saved.items():
                try:
                    os.sched_setaffinity(tid, cpus)
                except ProcessLookupError:       # a worker thread that ended meanwhile
                    pass
        best = max(best, (rate, cpu_us))
        for name in names:
            name.unlink()
    return {"stats_one_cpu_per_s": round(best[0]), "daemon_cpu_us_per_stat_one_cpu": round(best[1], 1)}


def tree_ops(mnt: Path, store: Path, files: int) -> dict:
    src = mnt / f"tree{files}"
    src.mkdir()
    for i in range(files):
        (src / f"{i // 1000:03d}").mkdir(exist_ok=True) if i % 1000 == 0 else None
        (src / f"{i // 1000:03d}" / f"f{i}").write_bytes(b"x")
    snap = json.loads(sls("snapshot", src, "--name", f"bench{files}", "--json"))
    clone = json.loads(sls("clone", src, mnt / f"clone{files}", "--json"))
    return {f"snapshot_ms_{files}": round(snap["ms"], 2), f"clone_ms_{files}": round(clone["ms"], 2),
            **diff_ms(mnt, store, src, files)}


def diff_ms(mnt: Path, store: Path, src: Path, files: int) -> dict:
    """`sls diff` of two checkpoints of the tree that differ in one file (the daemon's
    answer, without the command's start), and the reference a user has without it:
    `diff -rq` of the two checkpoints' fs/ trees (measured up to DIFF_REFERENCE_FILES:
    it reads every file of both)."""
    before = json.loads(sls("checkpoint", mnt, "--name", f"diff-a-{files}", "--json"))["checkpoint"]
    (src / "000" / "f1").write_bytes(b"y")
    after = json.loads(sls("checkpoint", mnt, "--name", f"diff-b-{files}", "--json"))["checkpoint"]
    started = time.perf_counter()
    found = request(store, "diff", a=str(before), b=str(after))
    out = {f"diff_ms_{files}": round((time.perf_counter() - started) * 1000, 2)}
    assert found["changed"] == [f"{src.name}/000/f1"], found
    if files <= DIFF_REFERENCE_FILES:
        history = mnt / ".sls" / "checkpoints"
        started = time.perf_counter()
        subprocess.run(["diff", "-rq", history / str(before) / "fs" / src.name, history / str(after) / "fs" / src.name],
                       capture_output=True)
        out[f"diff_rq_ms_{files}"] = round((time.perf_counter() - started) * 1000, 2)
    return out


def checkpoints_under_load(mnt: Path, store: Path, seconds: float) -> float:
    stop = threading.Event()

    def load() -> None:
        d = mnt / "load"
        d.mkdir()
        i = 0
        while not stop.is_set():
            (d / f"f{i % 200}").write_bytes(os.urandom(512))
            i += 1

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.5)      # steady load: the first file's creation and the grid's first slot left out
    before = request(store, "status")["checkpoints_taken"]
    start = time.perf_counter()       # (each count is read as its request returns)
    time.sleep(seconds)
    after = request(store, "status")["checkpoints_taken"]
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    return (after - before) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--no-writeback-cache", action="store_true",
                        help="mount without the kernel's writeback cache (for comparison)")
    args = parser.parse_args()
    size = (256 if args.quick else 1024) * MiB
    meta_files = 2000 if args.quick else 10_000
    tree_sizes = [1000] if args.quick else [1000, 100_000]
    work = Path(tempfile.mkdtemp(prefix="slsfs-bench-", dir=args.dir))
    store, mnt, plain = work / "store", work / "mnt", work / "plain"
    mnt.mkdir()
    plain.mkdir()
    result: dict = {"quick": args.quick, "seq_size_mb": size // MiB,
                    "writeback_cache": not args.no_writeback_cache,
                    "load_average_before": os.getloadavg()}   # a busy machine skews every rate
    try:
        sls("init", store)
        mount(store, mnt, ["--no-writeback-cache"] if args.no_writeback_cache else [])
        daemon = request(store, "status")["pid"]
        for name, root in (("plain", plain), ("slsfs", mnt)):
            sequential = seq(root / "seq", size)
            rr, rw = random_io(root / "seq", 2000 if args.quick else 10_000)
            os.unlink(root / "seq")
            unique, unique_cpu = unique_write(root / "unique", size, daemon if name == "slsfs" else None)
            copied = copy_file(root / "unique", root / "unique.copy")
            os.unlink(root / "unique")
            result[name] = {**sequential, "seq_write_unique_mb_s": round(unique, 1), "copy_mb_s": round(copied, 1),
                            "rand_read_iops": round(rr), "rand_write_iops": round(rw),
                            **metadata(root / "meta", meta_files, daemon if name == "slsfs" else None)}
            if name == "slsfs":
                result[name]["daemon_cpu_ms_per_unique_mib"] = round(unique_cpu, 2)
        result["slsfs"].update(first_stats_on_one_cpu(mnt / "meta_one_cpu", meta_files, daemon))
        rates = sqlite_rows({"plain": plain, "slsfs": mnt}, 3.0 if args.quick else 10.0,
                            daemons={"slsfs": daemon})
        for name, (rate, _cpu) in rates.items():
            result[name]["sqlite_rows_per_s"] = round(rate)
        result["slsfs"]["daemon_cpu_us_per_sqlite_row"] = round(rates["slsfs"][1])
        result["slsfs"]["fuse_requests_per_sqlite_row"] = sqlite_requests(mnt, 100 if args.quick else 500)
        writers = fsync_writers({"plain": plain, "slsfs": mnt}, 4.0 if args.quick else 12.0, stores={"slsfs": store})
        for name, (rate, _commits) in writers.items():
            result[name]["fsync_writers_files_per_s"] = round(rate)
        result["slsfs"]["fsync_writers_commits_per_file"] = round(writers["slsfs"][1], 3)
        s, p = result["slsfs"], result["plain"]
        result.update({k: s[k] for k in s})
        result["seq_write_ratio"] = round(s["seq_write_mb_s"] / p["seq_write_mb_s"], 3)
        result["seq_read_ratio"] = round(s["seq_read_mb_s"] / p["seq_read_mb_s"], 3)
        result["seq_reread_ratio"] = round(s["seq_reread_mb_s"] / p["seq_reread_mb_s"], 3)
        for figure in ("seq_read", "seq_reread"):      # as a rate ratio: ext4's CPU over ours
            result[f"{figure}_cpu_ratio"] = round(p[f"{figure}_cpu_ms_per_gib"] / s[f"{figure}_cpu_ms_per_gib"], 3)
        result["seq_write_unique_ratio"] = round(s["seq_write_unique_mb_s"] / p["seq_write_unique_mb_s"], 3)
        result["copy_ratio"] = round(s["copy_mb_s"] / p["copy_mb_s"], 3)
        result["sqlite_ratio"] = round(s["sqlite_rows_per_s"] / p["sqlite_rows_per_s"], 3)
        result["fsync_writers_ratio"] = round(s["fsync_writers_files_per_s"] / p["fsync_writers_files_per_s"], 3)
        for files in tree_sizes:
            result.update(tree_ops(mnt, store, files))
        window = 3.0 if args.quick else 10.0       # (a slot lost in 3 s reads as 99.7)
        result["checkpoints_per_s_under_load"] = round(checkpoints_under_load(mnt, store, window), 1)
    finally:
        subprocess.run([sys.executable, "-c", SLS_MAIN, "umount", "--force", str(mnt)],
                       capture_output=True, cwd=ROOT)
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
