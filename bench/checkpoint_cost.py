"""What periodic checkpoints cost an application, measured against itself in the same minutes.

bench/groups.py's overheads compare a group's rate with the application without slsfs
measured in other seconds; for SQLite that reference follows the disk (three fsyncs a
row), which swung 469-2,331 rows/s between the runs of one sitting (load 3.5-7), so a
10 Hz overhead moved from -192% to +58% between runs and could not say what a checkpoint
costs. Here one group without periodic checkpoints takes turns with itself: a turn left
alone, a turn checkpointed `hz` times a second (asked through the control socket, as
`sls checkpoint` asks), in alternating order, TURNS rounds. The rates of the two kinds of
turn give the overhead of the checkpoints alone, and the application's time lost per
checkpoint; its scheduler statistics (/proc/PID/schedstat: running, runnable but waiting
for a CPU; the rest of its time it waits, frozen or for the daemon's answers) say where
that time went:
  - frozen: the stop (the group's stop median, from `ps`);
  - waiting for the daemon beyond the stop: the daemon's thread that answers the mount
    busy with the checkpoint (the files commit after the thaw, the image's write) or
    waiting for Python's lock;
  - waiting for a CPU: the daemon's threads (the tracer's capture, the fdatasync) taking
    one of the CPUs it would have run on;
  - its own CPU: more per row (write-protection faults after each checkpoint, caches).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from mount.control import request

TURNS = 6


def _schedstat_ms(pid: int) -> tuple[float, float]:
    """(ms running, ms runnable waiting for a CPU) of process `pid`'s main thread so far."""
    with open(f"/proc/{pid}/schedstat") as f:
        run_ns, wait_ns, _ = f.read().split()
    return int(run_ns) / 1e6, int(wait_ns) / 1e6


def cpu_ms(stat_path: str) -> tuple[float, float]:
    """(user, system) CPU ms in a /proc stat file (of a process or one of its threads)."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    return int(fields[11]) * tick_ms, int(fields[12]) * tick_ms


def _daemon_cpu_ms(daemon: int) -> tuple[float, float]:
    """(CPU ms of all of `daemon`'s threads, of its main thread: the one serving the mount)."""
    return sum(cpu_ms(f"/proc/{daemon}/stat")), sum(cpu_ms(f"/proc/{daemon}/task/{daemon}/stat"))


def _checkpoints(store: Path) -> int:
    return request(store, "ps")["groups"][0]["checkpoints"]


def _checkpointing(store: Path, group: str, hz: float, stop: threading.Event) -> None:
    """Ask for a checkpoint of `group` `hz` times a second until `stop` is set."""
    next_at = time.monotonic()
    while not stop.is_set():
        request(store, "group_checkpoint", group=group)
        next_at = max(next_at + 1 / hz, time.monotonic())
        stop.wait(next_at - time.monotonic())


def _turn(store: Path, group: str, pids: tuple[int, int], rows_done, seconds: float,
          hz: float | None) -> dict[str, float]:
    """One turn of `seconds`, checkpointed `hz` times a second (None: not at all): rows,
    seconds, checkpoints taken, the application's ms running and waiting for a CPU, the
    daemon's CPU ms (`pids`: the application's, the daemon's)."""
    pid, daemon = pids
    stop = threading.Event()
    asking = None if hz is None else threading.Thread(target=_checkpointing, args=(store, group, hz, stop))
    if asking is not None:
        asking.start()
    try:
        rows0, t0, ck0, (run0, wait0) = rows_done(), time.monotonic(), _checkpoints(store), _schedstat_ms(pid)
        cpu0, main0 = _daemon_cpu_ms(daemon)
        time.sleep(seconds)
        rows1, t1, ck1, (run1, wait1) = rows_done(), time.monotonic(), _checkpoints(store), _schedstat_ms(pid)
        cpu1, main1 = _daemon_cpu_ms(daemon)
    finally:
        stop.set()
        if asking is not None:
            asking.join()
    return {"rows": rows1 - rows0, "seconds": t1 - t0, "checkpoints": ck1 - ck0,
            "run_ms": run1 - run0, "cpu_wait_ms": wait1 - wait0,
            "daemon_cpu_ms": cpu1 - cpu0, "daemon_main_thread_ms": main1 - main0}


def checkpoint_cost(store: Path, group: str, rows_done, window: float, hz: float = 10.0) -> dict:
    """The overhead of `hz` checkpoints a second for group `group` of `store` (running,
    without periodic checkpoints, one process; `rows_done()`: the rows it has made so far)
    against itself without them, over `window` seconds of each kind of turn, and the time
    it lost per checkpoint with its shares (see the module docstring); keys without a
    prefix (the caller adds one)."""
    ps = request(store, "ps")
    pids = ps["groups"][0]["pids"][0], ps["daemon"]
    request(store, "group_checkpoint", group=group)       # the first image (whole) before the turns
    kinds: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for round_ in range(TURNS):
        for kind in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            kinds[kind].append(_turn(store, group, pids, rows_done, window / TURNS, hz if kind == "on" else None))
    total = {kind: {key: sum(turn[key] for turn in turns) for key in turns[0]} for kind, turns in kinds.items()}
    off, on = total["off"], total["on"]
    rate_off, rate_on = off["rows"] / off["seconds"], on["rows"] / on["seconds"]
    checkpoints = max(on["checkpoints"], 1)

    def per_row(kind: dict[str, float]) -> dict[str, float]:     # ms of the application's time a row
        rows = max(kind["rows"], 1)
        waiting = kind["seconds"] * 1000 - kind["run_ms"] - kind["cpu_wait_ms"]
        return {"own_cpu": kind["run_ms"] / rows, "waiting_for_a_cpu": kind["cpu_wait_ms"] / rows,
                "frozen_or_waiting_for_the_daemon": waiting / rows}

    row_off, row_on = per_row(off), per_row(on)
    shares = {name: (row_on[name] - row_off[name]) * on["rows"] / checkpoints for name in row_off}
    stop_ms = request(store, "ps")["groups"][0]["stop_ms_median"]
    waiting = shares.pop("frozen_or_waiting_for_the_daemon")
    shares = {"frozen": stop_ms, "waiting_for_the_daemon_beyond_the_stop": waiting - stop_ms, **shares}
    return {
        "rows_per_s_turns_without": round(rate_off, 1),
        "rows_per_s_turns_with": round(rate_on, 1),
        "rows_per_s_each_turn_without": [round(t["rows"] / t["seconds"]) for t in kinds["off"]],
        "rows_per_s_each_turn_with": [round(t["rows"] / t["seconds"]) for t in kinds["on"]],
        "checkpoints_per_s": round(on["checkpoints"] / on["seconds"], 1),
        "overhead_pct": round(100 * (1 - rate_on / rate_off), 1),
        "lost_ms_per_checkpoint": round((1 - rate_on / rate_off) * on["seconds"] * 1000 / checkpoints, 2),
        "lost_ms_per_checkpoint_shares": {name: round(ms, 2) for name, ms in shares.items()},
        # the daemon's CPU beyond serving the rows at the rate without checkpoints
        **{f"{name}_ms_per_checkpoint": round((on[f"{name}_ms"] - off[f"{name}_ms"] / max(off["rows"], 1) * on["rows"]) / checkpoints, 2)
           for name in ("daemon_cpu", "daemon_main_thread")},
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
