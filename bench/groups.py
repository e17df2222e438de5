"""Benchmark of persistence groups; prints one JSON object.

SQLite (a fixed insert loop, one transaction per row, in Python) measured as rows
committed per second over a window:
  - with no slsfs (a plain directory), and with no slsfs and no fsyncs (synchronous=OFF),
  - inside a slsfs group without periodic checkpoints (--hz 0), in turns with both (each
    runs alone while the others are stopped, in TURNS rounds: the same minutes of disk),
  - with checkpoints at 10 and 100 per second (overhead_pct_10hz / _100hz);
  - and what 10 checkpoints a second cost the group without periodic checkpoints against
    itself in the same minutes, in turns with and without them (checkpoint_cost_10hz_*,
    bench/checkpoint_cost.py: the overhead, the ms lost per checkpoint and where they went):
    the overheads above follow the reference's disk, which swung 5x between runs;
plus the application's stop time per checkpoint (median, p99; the phases of the last
stop), the daemon's CPU per row and per checkpoint (beyond serving the rows at the rate
without checkpoints), the load average beside each rate, freeze-to-durable time
(median) and restore after a crash (SIGKILL of app and daemon), RESTORES times: the
daemon's restore time (and its phases: restore_daemon_phases_ms, see `sls ps --json`'s
restore_phases_ms), the wall time of `sls restore` (which starts a daemon and mounts)
and where the daemon's start went (restore_daemon_startup_ms: `ps`'s startup_ms); and the
same after a crash of the application alone (restore_app_crash_*: the running daemon
restores it in place, its mount made again; *to_running_ms: from the command's start to
its processes let go, running again, where cli_wall_ms also has the command's exit with
the application already running beside it; restore_app_crash_in_place_ms: the daemon's
whole restore, `ps`'s in_place_restore_ms, of which daemon_ms is the processes' part) and, after a crash of both, with `sls mount`
first, as the issue's recovery goes (restore_after_mount_*: the mount's daemon becomes the
group's).

Redis (Debian's redis-server, loopback, no RDB/AOF) with a dataset of --redis-mib MiB
(DEBUG POPULATE), measured with redis-benchmark (SET, 50 clients) the same ways, the
reference without slsfs before the first group and after each (redis_sets_per_s_no_slsfs_all;
each overhead is against the two around it: redis_sets_per_s_no_slsfs_around_*)
(`redis_*` keys, plus the daemon's CPU per checkpoint, the checkpoints taken in the
measured window, their rate and pages; skipped with a note if redis-server is not installed).
`--quick` uses short windows and a small dataset, and finishes in about 90 s.
`--redis-only` skips SQLite, `--sqlite-only` skips Redis. The daemon's CPU is given per checkpoint and per page
stored (and per page split: its main thread, which stores the pages and serves the mount,
and its other threads, which freeze, pre-copy and capture), with its share of one CPU and
the system part (the kernel's copies and syncs), the bytes it appended to the store per page
(records as stored: pages whole, compressed later by gc if kept, plus the images' metadata; redis_store_bytes_per_page_*),
its resident memory at the end of the window,
and the load average is noted beside each rate (the machine is shared); for Redis, the
daemon's fdatasyncs per checkpoint (under 1 when group commit makes several durable at once)
and its fixed cost: CPU per checkpoint (all threads and the main one) over IDLE_S with
no client (redis_idle_*).
For Redis also the CPU per SET of redis-server, of redis-benchmark and of the daemon
(redis_*_cpu_us_per_set_*) and redis_cpu_overhead_pct_*: their sum against the server's and
client's without slsfs, what checkpoints cost in CPU (an application that fills the CPUs pays
it in throughput; the time frozen comes on top). Steadier than SETs per second, whose
reference swings 2-3x with the machine's load.
Where Redis's main thread's time went while measured (redis_main_thread_running_share_*,
_waiting_for_cpu_share_*: runnable, not run; redis_frozen_share_*: the stops, as median x
count; the rest idle between requests) and its minor page faults per SET
(redis_minor_faults_per_set_*: about one a page written after each checkpoint, write-protection):
the parts of the overhead, each measured.
With --redis-gc-s S, Redis is also held at 10 Hz under redis-benchmark for S seconds
(60 or more: a collection comes every ~25 s for 100 MiB) and its SETs a second are compared
while the daemon's garbage collections run and between them (redis_gc_*, redis_sets_per_s_during_gc
and _between_gc): the windows above are too short to hold one.
Usage: python bench/groups.py [--quick] [--dir DIR] [--redis-mib N] [--redis-gc-s S] [--redis-only | --sqlite-only]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)              # bench/objectstore.py must not shadow the objectstore package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))    # for bench.fuse_requests

from bench.checkpoint_cost import checkpoint_cost, cpu_ms  # noqa: E402
from bench.fuse_requests import FuseRequests  # noqa: E402
from mount.control import request  # noqa: E402

LOOP = '''\
import sqlite3, sys
db = sqlite3.connect("bench.db", isolation_level=None)
db.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, payload TEXT)")
if sys.argv[1:] == ["nosync"]:
    db.execute("PRAGMA synchronous=OFF")
n = 0
while True:
    n += 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 200))
    db.execute("COMMIT")
    if n % 20 == 0:
        with open("progress.tmp", "w") as f:
            f.write(str(n))
        import os; os.replace("progress.tmp", "progress")
'''


def sls(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"bench: sls {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def progress(directory: Path) -> int:
    try:
        return int((directory / "progress").read_text())
    except (OSError, ValueError):
        return 0


def wait_for_start(directory: Path) -> None:
    """Until the loop in `directory` has made its first 40 rows."""
    deadline = time.monotonic() + 60
    while progress(directory) < 40:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: the SQLite loop in {directory} made no progress")
        time.sleep(0.05)


def rows_in_window(directory: Path, window: float) -> tuple[int, float]:
    """(rows the loop in `directory` committed, seconds) over about `window` seconds."""
    start_n, start_t = progress(directory), time.monotonic()
    time.sleep(window)
    return progress(directory) - start_n, time.monotonic() - start_t


def start_plain(argv: list[str], cwd: Path) -> subprocess.Popen:
    """The application without slsfs, in a session of its own as a group's processes are
    (slsfs.group_process starts them with setsid), so that the kernel's scheduler autogroups
    (one per session, sharing the CPUs between them) treat both alike: in the bench's own
    session, Redis shared an autogroup with redis-benchmark, and made 4-32% more SETs a
    second than in a session of its own (load 7, 3 interleaved pairs, 2026-12-01)."""
    return subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


TURNS = 6                         # rounds in which the loops with and without slsfs take turns


def in_turns(directories: dict[str, tuple[Path, list[int]]], window: float,
             turns: int = TURNS) -> dict[str, tuple[int, float]]:
    """(rows, seconds) of each SQLite loop in `directories` (name: (its directory, the
    pids that run it)) over `window` seconds each, taken in `turns` rounds in which each
    runs alone for its share while the others are stopped (SIGSTOP): the reference and the
    loop in a mount then see the same minutes of a shared machine, whose disk (three
    fsyncs a row) moved the plain loop's rate from 524 to 1,964 rows/s between two runs a
    minute apart (load 3.4). The last loop is left running, the others stopped (their caller
    ends them)."""
    counts = {name: (0, 0.0) for name in directories}
    last = next(reversed(directories))
    try:
        for _ in range(turns):
            for name, (directory, pids) in directories.items():
                for other, (_, other_pids) in directories.items():
                    for pid in other_pids:
                        os.kill(pid, signal.SIGSTOP if other != name else signal.SIGCONT)
                rows, seconds = rows_in_window(directory, window / turns)
                counts[name] = (counts[name][0] + rows, counts[name][1] + seconds)
    finally:
        for name, (_, pids) in directories.items():
            for pid in pids:
                os.kill(pid, signal.SIGCONT if name == last else signal.SIGSTOP)
    return counts


@dataclass
class GroupRun:
    """The SQLite loop in a group over the measured window: rows committed, seconds, FUSE
    requests per row by kind (None when not measured), the daemon's CPU ms and the
    checkpoints taken meanwhile, the group's `ps` entry at the end, and its store; with
    reference loops to take turns with, their rows per second (`reference_rates`)."""
    rows: int
    seconds: float
    requests: dict[str, float] | None
    daemon_cpu_ms: float
    checkpoints: int
    status: dict
    store: Path
    reference_rates: dict[str, float] | None = None


def group_run(work: Path, script: Path, hz: float, window: float,
              references: dict[str, tuple[Path, int]] | None = None) -> GroupRun:
    """The SQLite loop in a new group checkpointed `hz` times a second. The requests are
    all the mount's (the loop's, the daemon's kernel flushes, the checkpoints' syncfs)
    over the rows' window. With `references` (name: the directory and pid of a loop
    without slsfs, stopped), they take turns (in_turns: only for a group without
    checkpoints, whose processes may be stopped by a signal between them)."""
    store = work / f"store-{hz:g}"
    sls("init", str(store))
    sls("run", "--store", str(store), "--name", "bench", "--hz", str(hz), "--", sys.executable, str(script))
    mnt = Path(f"{store}.mnt")
    wait_for_start(mnt)
    before = daemon_cpu(store)
    rates = None
    with FuseRequests(mnt) as seen:
        if references is None:
            rows, seconds = rows_in_window(mnt, window)
        else:
            loops = {name: (directory, [pid]) for name, (directory, pid) in references.items()}
            counts = in_turns({**loops, "group": (mnt, request(store, "ps")["groups"][0]["pids"])}, window)
            rows, seconds = counts.pop("group")
            rates = {name: n / elapsed for name, (n, elapsed) in counts.items()}
    user_ms, system_ms, _, checkpoints, *_ = (a - b for a, b in zip(daemon_cpu(store), before))
    return GroupRun(rows, seconds, seen.per(rows), user_ms + system_ms, checkpoints,
                    request(store, "ps")["groups"][0], store, rates)


def note_checkpoints(out: dict, prefix: str, key: str, status: dict, extra: str) -> None:
    """The group's stop and freeze-to-durable figures from its `ps` entry, plus `extra`."""
    names = {"stop_ms_median": "stop_ms_median", "stop_ms_p99": "stop_ms_p99",
             "freeze_to_durable_ms_median": "durable_ms_median", "stop_phases_ms_last": "stop_phases_ms_last",
             {"rate_hz": "checkpoints_per_s_achieved"}.get(extra, extra): extra}
    for name, field in names.items():
        out[f"{prefix}{name}_{key}"] = status[field]


def crash_and_restore(store: Path, group: str, out: dict, prefix: str, daemon_too: bool = True,
                      mount_first: bool = False) -> None:
    """RESTORES times: SIGKILL the group's process and the daemon, then time `sls restore`
    (wall) and the daemon's own restore. The medians, every value (with the load average
    of the minute before each), and the run of the median wall's breakdown: the restore's
    phases and the daemon's start up to its answer (startup_ms: imports, store_open,
    detach_stale, reset_volume, mount, restore, ...). Not `daemon_too`: the application
    alone is killed, and the running daemon restores it in place (keys restore_app_crash_*).
    `mount_first`: the issue's recovery, `sls mount` after the crash, then the timed `sls
    restore`, whose daemon is the mount's (keys restore_after_mount_*)."""
    runs = []
    kind = "after_mount_" if mount_first else "" if daemon_too else "app_crash_"
    for _ in range(RESTORES):
        ps = request(store, "ps")
        os.kill(ps["groups"][0]["pids"][0], signal.SIGKILL)
        if daemon_too:
            os.kill(ps["daemon"], signal.SIGKILL)
        time.sleep(0.2)
        while not daemon_too and request(store, "ps")["groups"][0]["running"]:
            time.sleep(0.05)
        if mount_first:
            sls("mount", "--force", str(store), ps["mountpoint"])
            time.sleep(0.5)              # (its pre-import of the group daemon's modules)
        load = os.getloadavg()[0]
        started, started_unix = time.perf_counter(), time.time()
        sls("restore", group, "--store", str(store))
        wall = round((time.perf_counter() - started) * 1000, 1)
        restored = request(store, "ps")
        restored["to_running_ms"] = round((restored["groups"][0]["started"] - started_unix) * 1000, 1)
        runs.append((wall, restored["groups"][0]["restore_ms"], load, restored))
        time.sleep(1.0)                  # a few checkpoints of the restored group before the next crash
    runs.sort(key=lambda run: run[0])
    wall, _, _, median = runs[len(runs) // 2]
    out[f"{prefix}restore_{kind}cli_wall_ms"] = wall
    out[f"{prefix}restore_{kind}daemon_ms"] = sorted(run[1] for run in runs)[len(runs) // 2]
    out[f"{prefix}restore_{kind}to_running_ms"] = sorted(run[3]["to_running_ms"] for run in runs)[len(runs) // 2]
    out[f"{prefix}restore_{kind}to_running_ms_all"] = [run[3]["to_running_ms"] for run in runs]
    out[f"{prefix}restore_{kind}cli_wall_ms_all"] = [run[0] for run in runs]
    out[f"{prefix}restore_{kind}daemon_ms_all"] = [run[1] for run in runs]
    out[f"{prefix}restore_{kind}load_avg_1min"] = [round(run[2], 2) for run in runs]
    out[f"{prefix}restore_{kind}daemon_phases_ms"] = median["groups"][0]["restore_phases_ms"]
    if daemon_too or mount_first:        # (a daemon's start: a new one, or the mount's becoming it)
        out[f"{prefix}restore_{kind}daemon_startup_ms"] = median.get("startup_ms")
    else:                                # the daemon's whole restore in place: its phases, restore_ms among them
        out[f"{prefix}restore_{kind}in_place_ms"] = round(sum(median["in_place_restore_ms"].values()), 1)
        out[f"{prefix}restore_{kind}in_place_phases_ms"] = median["in_place_restore_ms"]


RESTORES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_argv(port: int) -> list[str]:
    return [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--enable-debug-command", "yes"]


def redis_cli(port: int, *args: str) -> str:
    result = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=300)
    return result.stdout.strip() if result.returncode == 0 else ""


def redis_fill(port: int, mib: int) -> None:
    """Wait for the server, then fill its dataset (once)."""
    deadline = time.monotonic() + 60
    while redis_cli(port, "PING") != "PONG":
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: redis-server on port {port} does not answer")
        time.sleep(0.05)
    if redis_cli(port, "DBSIZE") == "0":
        redis_cli(port, "DEBUG", "POPULATE", str(mib * 1024), "fill", "1000")


def redis_cpu_s(port: int) -> float:
    """The CPU seconds redis-server has used (its INFO cpu: user + system), read through
    its port (inside a group it runs in a PID namespace of its own)."""
    fields = dict(line.split(":", 1) for line in redis_cli(port, "INFO", "cpu").splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


@dataclass
class RedisRun:
    """One redis-benchmark run against a server: its SETs a second, the CPU seconds the
    server and redis-benchmark used, and the server's main thread meanwhile (RedisThread)."""
    rate: float
    server_s: float
    client_s: float
    thread: "RedisThread"


@dataclass
class RedisThread:
    """What Redis's main thread (which serves every SET) did over a span: seconds running,
    seconds runnable but waiting for a CPU (schedstat), and minor page faults (with
    checkpoints, about one a page written since the last: write-protection)."""
    seconds: float
    running_s: float
    waiting_s: float
    minor_faults: int

    @staticmethod
    def read(pid: int) -> "RedisThread":
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            running_ns, waiting_ns = map(int, f.read().split()[:2])
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            minor_faults = int(f.read().rsplit(")", 1)[1].split()[7])
        return RedisThread(time.monotonic(), running_ns / 1e9, waiting_ns / 1e9, minor_faults)

    def __sub__(self, before: "RedisThread") -> "RedisThread":
        return RedisThread(self.seconds - before.seconds, self.running_s - before.running_s,
                           self.waiting_s - before.waiting_s, self.minor_faults - before.minor_faults)


def redis_rate(port: int, mib: int, requests: int, pid: int) -> RedisRun:
    """Fill the dataset (once), then SET requests per second by redis-benchmark, with the
    CPU seconds redis-server (process `pid`) and redis-benchmark used meanwhile, and what
    the server's main thread did."""
    redis_fill(port, mib)
    server_before, client_before, thread_before = redis_cpu_s(port), _children_cpu_s(), RedisThread.read(pid)
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(requests), "-c", "50",
                          "-r", "100000", "--csv"], capture_output=True, text=True, timeout=600).stdout
    thread = RedisThread.read(pid) - thread_before
    client_s = _children_cpu_s() - client_before
    server_s = redis_cpu_s(port) - server_before
    for line in out.splitlines():
        fields = [f.strip('"') for f in line.split(",")]
        if fields[0] == "SET":
            return RedisRun(float(fields[1]), server_s, client_s, thread)
    raise SystemExit(f"bench: no SET figure from redis-benchmark: {out[-300:]}")


def note_redis_thread(out: dict, key: str, thread: RedisThread, requests: int, frozen_ms: float = 0.0) -> None:
    """Where Redis's main thread's time went while redis-benchmark ran: its shares of the
    span running, waiting for a CPU (the daemon's CPU competes there, beside other load),
    and frozen (`frozen_ms`: the checkpoints' stops, median times count), the rest idle
    between requests; and its minor page faults per SET (the write-protect faults after each
    checkpoint: ~1-2 us each)."""
    span = max(thread.seconds, 1e-9)
    out[f"redis_main_thread_running_share_{key}"] = round(thread.running_s / span, 3)
    out[f"redis_main_thread_waiting_for_cpu_share_{key}"] = round(thread.waiting_s / span, 3)
    out[f"redis_frozen_share_{key}"] = round(frozen_ms / 1000 / span, 3)
    out[f"redis_minor_faults_per_set_{key}"] = round(thread.minor_faults / requests, 2)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def note_cpu_per_set(out: dict, key: str, requests: int, server_s: float, client_s: float,
                     daemon_ms: float = 0.0) -> None:
    """CPU per SET of redis-server, of redis-benchmark and of the daemon (us): steadier than
    SETs per second on a shared machine (the reference swung 53k-167k SETs/s from one hour
    to the next), and where the cost of checkpoints goes (the server's: write-protect faults
    and cache misses; the daemon's: capture and storage)."""
    out[f"redis_server_cpu_us_per_set_{key}"] = round(1e6 * server_s / requests, 2)
    out[f"redis_client_cpu_us_per_set_{key}"] = round(1e6 * client_s / requests, 2)
    out[f"redis_daemon_cpu_us_per_set_{key}"] = round(1e3 * daemon_ms / requests, 2)


def daemon_cpu(store: Path) -> tuple[float, float, float, int, int, float, int]:
    """(user and system CPU ms the store's daemon has used, the CPU ms of its main thread
    alone, checkpoints its group has taken, pages they stored, monotonic time, bytes of
    records it appended to the store: what compression left of the pages): the daemon's
    CPU competes with the application on a small machine, beyond the stop itself. The main
    thread (trio) serves the mount and stores the pages and commits after each thaw; the
    others are the tracer (the freeze, the pre-copy and the capture), the page copier, the
    seal and the fsync threads."""
    ps = request(store, "ps")
    daemon = ps["daemon"]
    user_ms, system_ms = cpu_ms(f"/proc/{daemon}/stat")
    main_ms = sum(cpu_ms(f"/proc/{daemon}/task/{daemon}/stat"))
    group = ps["groups"][0]
    return (user_ms, system_ms, main_ms, group["checkpoints"], group["pages_total"], time.monotonic(),
            ps.get("store_bytes_appended", 0))


def note_daemon_cpu(out: dict, key: str, before: tuple, after: tuple, status: dict) -> None:
    """The daemon's CPU between `before` and `after` (daemon_cpu), per checkpoint and per
    page stored (all of it, and its main thread's part: storing; the rest: capturing), the
    share of one CPU it took, and what the checkpoints were."""
    user_ms, system_ms, main_ms, checkpoints, pages, seconds, stored = (a - b for a, b in zip(after, before))
    cpu_ms = user_ms + system_ms
    out[f"redis_daemon_cpu_ms_per_checkpoint_{key}"] = round(cpu_ms / max(checkpoints, 1), 1)
    out[f"redis_daemon_main_thread_ms_per_checkpoint_{key}"] = round(main_ms / max(checkpoints, 1), 1)
    out[f"redis_daemon_cpu_us_per_page_{key}"] = round(1000 * cpu_ms / max(pages, 1), 1)
    out[f"redis_daemon_cpu_us_per_page_main_thread_{key}"] = round(1000 * main_ms / max(pages, 1), 1)
    out[f"redis_daemon_cpu_us_per_page_other_threads_{key}"] = round(1000 * (cpu_ms - main_ms) / max(pages, 1), 1)
    out[f"redis_daemon_cpu_share_of_one_cpu_{key}"] = round(cpu_ms / 1000 / seconds, 3)
    out[f"redis_daemon_cpu_system_pct_{key}"] = round(100 * system_ms / max(cpu_ms, 1), 1)
    out[f"redis_checkpoints_{key}"] = checkpoints           # in the measured window
    out[f"redis_checkpoints_per_s_achieved_{key}"] = round(checkpoints / seconds, 1)
    out[f"redis_pages_per_checkpoint_{key}"] = round(pages / max(checkpoints, 1))
    out[f"redis_store_bytes_per_page_{key}"] = round(stored / max(pages, 1))   # records and metadata, as stored
    out[f"redis_precopied_pages_last_{key}"] = status["precopied_pages_last"]


IDLE_S = 2.0


def note_idle_cost(out: dict, key: str, store: Path) -> None:
    """The daemon's fixed cost per checkpoint: its CPU per checkpoint over IDLE_S with no
    client (Redis idle: a few pages a checkpoint), all threads and the main one (trio: the
    image, the records, the commits; the others: freeze, capture, fsync)."""
    before = daemon_cpu(store)
    time.sleep(IDLE_S)
    user_ms, system_ms, main_ms, checkpoints, _, seconds, _ = (a - b for a, b in zip(daemon_cpu(store), before))
    out[f"redis_idle_daemon_cpu_ms_per_checkpoint_{key}"] = round((user_ms + system_ms) / max(checkpoints, 1), 2)
    out[f"redis_idle_daemon_main_thread_ms_per_checkpoint_{key}"] = round(main_ms / max(checkpoints, 1), 2)
    out[f"redis_idle_checkpoints_per_s_{key}"] = round(checkpoints / seconds, 1)


def daemon_memory_mb(store: Path) -> dict[str, float]:
    """The daemon's resident memory now and at its peak (VmRSS, VmHWM), MB."""
    with open(f"/proc/{request(store, 'ps')['daemon']}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {name: round(int(fields[field].split()[0]) / 1024, 1) for name, field in (("rss", "VmRSS"), ("peak", "VmHWM"))}


@dataclass
class PlainRedis:
    """One measurement of Redis without slsfs: SETs a second, and the CPU seconds the
    server and redis-benchmark used, with the load average after it."""
    rate: float
    server_s: float
    client_s: float
    load: float
    thread: RedisThread


def plain_redis(work: Path, mib: int, requests: int) -> PlainRedis:
    """A fresh redis-server without slsfs, in a session of its own, filled and measured
    once (as each group's is: a fresh server, the same fill, one redis-benchmark run)."""
    plain = Path(tempfile.mkdtemp(prefix="redis-plain-", dir=work))
    port = free_port()
    proc = start_plain(redis_argv(port), plain)
    try:
        run = redis_rate(port, mib, requests, proc.pid)
        return PlainRedis(run.rate, run.server_s, run.client_s, os.getloadavg()[0], run.thread)
    finally:
        proc.kill()
        proc.wait()


REDIS_KEYS = ("in_mount_no_checkpoints", "10hz", "100hz")


def redis_bench(work: Path, out: dict, stores: list[Path], mib: int, requests: int) -> None:
    """Redis without slsfs, then in a group at --hz 0, 10 and 100, the reference measured
    again after each group has stopped: each group's overhead is against the mean of the
    two references around it. A reference measured once, minutes before, made the figures
    follow the machine's load (it swings 2-3x from one minute to the next here): measured
    in turns (2026-12-01, load 6.2-7.3, pairs of fresh servers), Redis at --hz 0 made
    within the noise as many SETs a second as without slsfs (medians 40.4k vs 38.9k over
    8 pairs, 32.3k vs 34.6k over 10), where single bench runs had said 15-41% fewer."""
    references = [plain_redis(work, mib, requests)]
    for hz, key in zip((0, 10, 100), REDIS_KEYS):
        store = work / f"redis-store-{hz:g}"
        stores.append(store)
        port = free_port()
        sls("init", str(store))
        sls("run", "--store", str(store), "--name", "redis", "--hz", str(hz), "--", *redis_argv(port))
        redis_fill(port, mib)
        ps = request(store, "ps")
        before, barriers_before = daemon_cpu(store), ps.get("group_commit_barriers", 0)
        run = redis_rate(port, mib, requests, ps["groups"][0]["pids"][0])
        out[f"redis_sets_per_s_{key}"] = round(run.rate, 1)
        out[f"redis_load_avg_1min_{key}"] = round(os.getloadavg()[0], 2)
        user_ms, system_ms = daemon_cpu(store)[:2]
        note_cpu_per_set(out, key, requests, run.server_s, run.client_s, user_ms + system_ms - before[0] - before[1])
        frozen_ms = 0.0
        if hz:
            ps = request(store, "ps")
            status = ps["groups"][0]
            note_checkpoints(out, "redis_", key, status, "pages_last")
            after = daemon_cpu(store)
            frozen_ms = (status["stop_ms_median"] or 0) * (after[3] - before[3])
            note_daemon_cpu(out, key, before, after, status)
            out[f"redis_fdatasyncs_per_checkpoint_{key}"] = round(   # < 1: group commit (slsfs.group_commit)
                (ps.get("group_commit_barriers", 0) - barriers_before) / max(after[3] - before[3], 1), 2)
            note_idle_cost(out, key, store)
            for name, mb in daemon_memory_mb(store).items():
                out[f"redis_daemon_{name}_mb_{key}"] = mb
        note_redis_thread(out, key, run.thread, requests, frozen_ms)
        if hz == 10:
            crash_and_restore(store, "redis", out, "redis_")
            crash_and_restore(store, "redis", out, "redis_", daemon_too=False)
            crash_and_restore(store, "redis", out, "redis_", mount_first=True)
        sls("stop", "--store", str(store))
        references.append(plain_redis(work, mib, requests))    # (no daemon running: none competes)
    note_redis_references(out, references, requests)


GC_SAMPLE_S = 0.2


@dataclass
class GcSample:
    """What a GC window's sampler saw at one instant: Redis's commands done (INFO stats),
    the daemon's collections (`ps`'s gc: one under way, how many ended, the last one's
    figures) and its CPU ms."""
    at: float
    commands: int
    collecting: bool
    collections: int
    last: dict | None
    daemon_cpu_ms: float

    @staticmethod
    def read(store: Path, port: int) -> "GcSample":
        stats = dict(line.split(":", 1) for line in redis_cli(port, "INFO", "stats").splitlines() if ":" in line)
        ps = request(store, "ps")
        gc = ps["gc"]
        return GcSample(time.monotonic(), int(stats["total_commands_processed"]), gc["running_since"] is not None,
                        gc["collections"], gc["last"], sum(cpu_ms(f"/proc/{ps['daemon']}/stat")))


def redis_gc_bench(work: Path, out: dict, stores: list[Path], mib: int, seconds: float) -> None:
    """Redis in a group at 10 Hz under redis-benchmark for `seconds`, sampled every
    GC_SAMPLE_S: its SETs a second while the daemon's garbage collections run against
    between them (medians of the samples: one counts as during a collection when the same
    one was under way at both its ends, as between when none was; redis_gc_overhead_pct),
    the share of the time they ran, each one's seconds and live chunks, and the daemon's
    share of one CPU during and between. The 10 Hz window of redis_bench is too short to
    hold one: a collection comes once the store has doubled (for 100 MiB at 10 Hz, one of
    ~12 s every ~25 s, 2026-12-02), so its overhead leaves them out."""
    store = work / "redis-store-gc"
    stores.append(store)
    port = free_port()
    sls("init", str(store))
    sls("run", "--store", str(store), "--name", "redis", "--hz", "10", "--", *redis_argv(port))
    redis_fill(port, mib)
    client = subprocess.Popen(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(10 ** 10), "-c", "50",
                               "-r", "100000", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[GcSample] = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(GcSample.read(store, port))
            time.sleep(GC_SAMPLE_S)
        out["redis_load_avg_1min_gc"] = round(os.getloadavg()[0], 2)
    finally:
        client.kill()
        client.wait()
    sls("stop", "--store", str(store))
    note_gc_window(out, samples)


def note_gc_window(out: dict, samples: list[GcSample]) -> None:
    """redis_gc_bench's figures from its samples (see there)."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    spans = {True: 0.0, False: 0.0}
    cpu_ms = {True: 0.0, False: 0.0}
    ended: list[dict] = []
    for before, after in zip(samples, samples[1:]):
        if after.collections != before.collections and after.last:
            ended.append(after.last)
        if before.collecting != after.collecting or before.collections != after.collections:
            continue             # a collection began or ended inside: neither
        span = after.at - before.at
        rates[after.collecting].append((after.commands - before.commands) / span)
        spans[after.collecting] += span
        cpu_ms[after.collecting] += after.daemon_cpu_ms - before.daemon_cpu_ms
    during, between = (statistics.median(rates[k]) if rates[k] else None for k in (True, False))
    window = samples[-1].at - samples[0].at if samples else 0
    out["redis_gc_window_s"] = round(window, 1)
    if window:
        out["redis_sets_per_s_gc_window"] = round((samples[-1].commands - samples[0].commands) / window)
        out["redis_daemon_cpu_share_of_one_cpu_gc_window"] = round(
            (samples[-1].daemon_cpu_ms - samples[0].daemon_cpu_ms) / 1000 / window, 3)
    out["redis_gc_collections"] = samples[-1].collections - samples[0].collections if samples else 0
    out["redis_gc_share_of_time"] = round(spans[True] / max(spans[True] + spans[False], 1e-9), 3)
    out["redis_sets_per_s_during_gc"] = round(during) if during is not None else None
    out["redis_sets_per_s_between_gc"] = round(between) if between is not None else None
    out["redis_gc_overhead_pct"] = round(100 * (1 - during / between), 1) if during and between else None
    for key, collecting in (("during", True), ("between", False)):
        out[f"redis_daemon_cpu_share_of_one_cpu_{key}_gc"] = (
            round(cpu_ms[collecting] / 1000 / spans[collecting], 3) if spans[collecting] else None)
    for figure in ("seconds", "busy_seconds", "live_chunks"):      # of each collection that ended in the window
        out[f"redis_gc_{figure}"] = [collection[figure] for collection in ended]


def note_redis_references(out: dict, references: list[PlainRedis], requests: int) -> None:
    """The references' figures (each one's rate and load; the median rate and the mean CPU
    per SET as the no_slsfs keys) and each group's overheads against the two references
    measured just before and after it: throughput (redis_overhead_pct_*), CPU per SET of
    the server, client and daemon (redis_cpu_overhead_pct_*), and the throughput overhead per
    checkpoint taken (redis_lost_ms_per_checkpoint_*: the ms of SETs each one cost). The last
    compares runs whose achieved rates differ: at --hz 100 the daemon takes what it can, 20
    to 70 a second here, and SETs a second fall as that rises (2026-12-02, load 2.7-6, 8 runs
    of two versions: 43.5k at 20.7 a second, 33.5k at 38.4, 8.6k at 71.6): a daemon that
    took more made fewer SETs."""
    rates = sorted(ref.rate for ref in references)
    out["redis_sets_per_s_no_slsfs"] = round(rates[len(rates) // 2], 1)
    out["redis_sets_per_s_no_slsfs_all"] = [round(ref.rate, 1) for ref in references]
    out["redis_load_avg_1min_no_slsfs"] = [round(ref.load, 2) for ref in references]
    note_cpu_per_set(out, "no_slsfs", requests * len(references), sum(ref.server_s for ref in references),
                     sum(ref.client_s for ref in references))
    note_redis_thread(out, "no_slsfs", RedisThread(*(sum(getattr(ref.thread, name) for ref in references) for name in
                                                     ("seconds", "running_s", "waiting_s", "minor_faults"))),
                      requests * len(references))
    for key, before, after in zip(REDIS_KEYS, references, references[1:]):
        base = (before.rate + after.rate) / 2
        base_cpu_s = (before.server_s + before.client_s + after.server_s + after.client_s) / 2
        out[f"redis_sets_per_s_no_slsfs_around_{key}"] = round(base, 1)
        out[f"redis_overhead_pct_{key}"] = round(100 * (1 - out[f"redis_sets_per_s_{key}"] / base), 1)
        if checkpoints_per_s := out.get(f"redis_checkpoints_per_s_achieved_{key}"):
            out[f"redis_lost_ms_per_checkpoint_{key}"] = round(
                1000 * (1 - out[f"redis_sets_per_s_{key}"] / base) / checkpoints_per_s, 2)
        cpu_us = sum(out[f"redis_{who}_cpu_us_per_set_{key}"] for who in ("server", "client", "daemon"))
        out[f"redis_cpu_overhead_pct_{key}"] = round(100 * (cpu_us / (1e6 * base_cpu_s / requests) - 1), 1)


def sqlite_bench(work: Path, out: dict, stores: list[Path], script: Path, window: float) -> None:
    """The SQLite loop's rows per second with no slsfs, in a group without checkpoints and
    at 10 and 100 Hz, its checkpoints' figures, and restores after a crash at 10 Hz. The
    rate without slsfs is measured in turns with the group without checkpoints (in_turns),
    and is the reference of all three overheads; beside it, in the same turns, the loop
    without slsfs and without its fsyncs (PRAGMA synchronous=OFF: rows_per_s_no_slsfs_no_fsync,
    overhead_pct_in_mount_against_no_fsync): a group's mount answers no fsync (a restore
    goes back to the last checkpoint), so against the plain loop it trades the disk's three
    fsyncs a row for its FUSE requests, and that figure follows the disk's speed."""
    loops = {}
    try:
        for name, args in (("plain", []), ("no_fsync", ["nosync"])):
            (work / name).mkdir()
            loops[name] = start_plain([sys.executable, str(script), *args], work / name)
        for name, loop in loops.items():
            wait_for_start(work / name)
            os.kill(loop.pid, signal.SIGSTOP)
        groups_against(work, out, stores, script, window, {name: (work / name, loop.pid) for name, loop in loops.items()})
    finally:
        for loop in loops.values():
            loop.kill()
            loop.wait()


def groups_against(work: Path, out: dict, stores: list[Path], script: Path, window: float,
                   references: dict[str, tuple[Path, int]]) -> None:
    """sqlite_bench's groups, the first (no checkpoints) in turns with `references`."""
    cpu_us_per_row = 0.0                  # the daemon's, serving the rows without checkpoints
    for hz, key in ((0, "in_mount_no_checkpoints"), (10, "10hz"), (100, "100hz")):
        run = group_run(work, script, hz, window, None if hz else references)
        stores.append(run.store)
        if run.reference_rates is not None:
            out["rows_per_s_no_slsfs"] = round(run.reference_rates["plain"], 1)
            out["rows_per_s_no_slsfs_no_fsync"] = round(run.reference_rates["no_fsync"], 1)
            out["load_avg_1min_no_slsfs"] = round(os.getloadavg()[0], 2)
        out[f"rows_per_s_{key}"] = round(run.rows / run.seconds, 1)
        out[f"load_avg_1min_{key}"] = round(os.getloadavg()[0], 2)
        out[f"fuse_requests_per_row_{key}"] = run.requests
        out[f"daemon_cpu_us_per_row_{key}"] = round(1000 * run.daemon_cpu_ms / max(run.rows, 1))
        if not hz:
            cpu_us_per_row = 1000 * run.daemon_cpu_ms / max(run.rows, 1)
            mnt = Path(f"{run.store}.mnt")
            for name, value in checkpoint_cost(run.store, "bench", lambda: progress(mnt), window).items():
                out[f"checkpoint_cost_10hz_{name}"] = value
        else:
            note_checkpoints(out, "", key, run.status, "rate_hz")
            # the daemon's CPU beyond serving the rows (at the rate without checkpoints)
            beyond_ms = run.daemon_cpu_ms - run.rows * cpu_us_per_row / 1000
            out[f"daemon_cpu_ms_per_checkpoint_{key}"] = round(beyond_ms / max(run.checkpoints, 1), 1)
            out[f"daemon_cpu_share_of_one_cpu_{key}"] = round(run.daemon_cpu_ms / 1000 / run.seconds, 3)
        if hz == 10:
            crash_and_restore(run.store, "bench", out, "")
            crash_and_restore(run.store, "bench", out, "", daemon_too=False)
            crash_and_restore(run.store, "bench", out, "", mount_first=True)
        sls("stop", "--store", str(run.store))
    base = out["rows_per_s_no_slsfs"]
    for key in ("in_mount_no_checkpoints", "10hz", "100hz"):
        out[f"overhead_pct_{key}"] = round(100 * (1 - out[f"rows_per_s_{key}"] / base), 1) if base else None
    base = out["rows_per_s_no_slsfs_no_fsync"]
    out["overhead_pct_in_mount_against_no_fsync"] = (
        round(100 * (1 - out["rows_per_s_in_mount_no_checkpoints"] / base), 1) if base else None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", help="work directory (default: a new temporary one)")
    parser.add_argument("--redis-mib", type=int, help="Redis dataset size (default 100, 16 with --quick)")
    parser.add_argument("--redis-gc-s", type=float, default=0.0,
                        help="also hold Redis at 10 Hz this long to measure it during GC (redis_gc_*; default: not)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--redis-only", action="store_true", help="measure Redis only (not SQLite)")
    only.add_argument("--sqlite-only", action="store_true", help="measure SQLite only (not Redis)")
    args = parser.parse_args()
    mib = args.redis_mib or (16 if args.quick else 100)
    requests = 150000 if args.quick else 400000   # 1-2 s (quick) of SETs on this VM: 10+ checkpoints at 10 Hz
    window = 5.0 if args.quick else 20.0
    work = Path(args.dir or tempfile.mkdtemp(prefix="slsfs-bench-groups-"))
    script = work / "sqlite_loop.py"
    work.mkdir(parents=True, exist_ok=True)
    script.write_text(LOOP)
    stores: list[Path] = []
    out: dict = {"benchmark": "groups", "quick": args.quick, "window_s": window, "app": "sqlite insert loop",
                 "redis_dataset_mib": mib, "redis_requests": requests}
    try:
        if not args.redis_only:
            sqlite_bench(work, out, stores, script, window)
        if args.sqlite_only:
            pass
        elif shutil.which("redis-server") and shutil.which("redis-benchmark"):
            redis_bench(work, out, stores, mib, requests)
            if args.redis_gc_s > 0:
                redis_gc_bench(work, out, stores, mib, args.redis_gc_s)
        else:
            out["redis"] = "not measured: redis-server is not installed (make setup installs it)"
    finally:
        for store in stores:
            subprocess.run([sys.executable, "-m", "slsfs.cli", "stop", "--store", str(store)], capture_output=True)
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
