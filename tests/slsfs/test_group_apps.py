"""Real applications restored after SIGKILL of the application and the daemon:
SQLite in a transaction loop, a Python service keeping its state in memory, a shell
pipeline of several processes joined by a pipe, a Python multiprocessing pool, and two
processes joined by a loopback TCP connection."""
from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

from group_helpers import TARGETS, wait_for


def number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def test_sqlite_transaction_loop_survives_crash(group_store, tmp_path):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "sql", "--hz", "5", "--",
              sys.executable, str(TARGETS / "sqlite_loop.py"))
    wait_for(lambda: (number(store.mnt / "committed") or 0) > 50, "SQLite to commit rows")
    floor = wait_for(lambda: number(store.mnt / "committed"), "a committed count")
    store.checkpoint("sql")                         # durable, and taken after `floor` was read
    store.crash()
    store.sls("restore", "sql", "--store", str(store.path))
    wait_for(lambda: (number(store.mnt / "committed") or 0) > floor + 50, "the restored loop to commit more")
    assert not (store.mnt / "app.db.bad").exists(), (store.mnt / "app.db.bad").read_text()
    checkpoint = store.checkpoint("sql")
    frozen = store.mnt / ".sls" / "checkpoints" / str(checkpoint) / "fs"
    for name in ("app.db", "app.db-journal"):      # a hot journal (mid-transaction) rolls back on open
        if (frozen / name).exists():
            shutil.copyfile(frozen / name, tmp_path / name)
    db = sqlite3.connect(tmp_path / "app.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count, top = db.execute("SELECT count(*), max(i) FROM t").fetchone()
        assert count == top and top > floor, (count, top, floor)
    finally:
        db.close()
    store.sls("stop", "--store", str(store.path))


def request(store, rid: str, text: str) -> None:
    tmp = store.mnt / f".req-{rid}"
    tmp.write_text(text)
    tmp.rename(store.mnt / "inbox" / rid)


def reply(store, rid: str) -> str:
    return wait_for(lambda: (store.mnt / "outbox" / rid).exists() and (store.mnt / "outbox" / rid).read_text(),
                    f"the reply to {rid}")


def test_python_service_keeps_memory_state_across_crash(group_store):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "kv", "--hz", "5", "--",
              sys.executable, str(TARGETS / "kv_service.py"))
    wait_for(lambda: (store.mnt / "inbox").is_dir(), "the service to start")
    for i in range(20):
        request(store, f"{i:04}-set", f"set key{i} value{i}")
    for i in range(20):
        assert reply(store, f"{i:04}-set") == "ok"
    store.checkpoint("kv")
    store.crash()
    store.sls("restore", "kv", "--store", str(store.path))
    for i in range(20):
        request(store, f"{i:04}-get", f"get key{i}")
    for i in range(20):
        assert reply(store, f"{i:04}-get") == f"value{i}", f"key{i} lost from the service's memory"
    store.sls("stop", "--store", str(store.path))


def test_shell_pipeline_survives_crash(group_store):
    script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done | while read n; do echo $n > count.tmp; mv count.tmp count; done"
    counts_on_after_crash(group_store, "pipe", ["/bin/sh", "-c", script])


def test_python_multiprocessing_pool_survives_crash(group_store):
    """A Pool with a shared Value, a Lock and a Queue: their semaphores are /dev/shm files
    mapped and unlinked at once, shared by the parent and its workers."""
    counts_on_after_crash(group_store, "pool", [sys.executable, str(TARGETS / "mp_pool.py")])
    assert not (group_store.mnt / "bad").exists(), (group_store.mnt / "bad").read_text()


def counts_on_after_crash(store, name: str, argv: list[str]) -> None:
    """Run `argv` (it keeps a count in the file `count`) as group `name`, crash everything
    after a checkpoint, restore: the count did not go back and goes on; then stop."""
    store.sls("run", "--store", str(store.path), "--name", name, "--hz", "5", "--", *argv)
    wait_for(lambda: (number(store.mnt / "count") or 0) > 20, f"{name} to count")
    floor = wait_for(lambda: number(store.mnt / "count"), "a count")
    store.checkpoint(name)
    store.crash()
    store.sls("restore", name, "--store", str(store.path))
    restored = wait_for(lambda: number(store.mnt / "count"), "the restored count")
    assert restored >= floor, f"the count went back from {floor} to {restored}"
    wait_for(lambda: (number(store.mnt / "count") or 0) > restored + 20, f"the restored {name} to count on")
    store.sls("stop", "--store", str(store.path))


def test_tcp_connection_inside_the_group_carries_on_after_a_crash(group_store):
    """A parent and its child joined by a loopback TCP connection (a service and its
    client in one group): after SIGKILL of everything and `sls restore`, the stream goes
    on from the checkpoint without a lost or repeated byte (its own check), no reset."""
    store = group_store
    out = store.mnt / "tcp.out"
    target = Path(__file__).parents[1] / "checkpointer" / "targets" / "tcp_stream.py"
    store.sls("run", "--store", str(store.path), "--name", "tcp", "--", sys.executable, str(target), str(out))

    def progress() -> int:
        lines = out.read_text().splitlines() if out.exists() else []
        assert not [line for line in lines if " BAD " in line], lines[-3:]
        return int(lines[-1].split()[1]) if lines and lines[-1].endswith(" ok") else 0
    wait_for(lambda: progress() > 50_000, "the stream to flow")
    store.checkpoint("tcp")
    store.crash()
    restored = store.sls("restore", "tcp", "--store", str(store.path))
    assert "connection" not in restored.stderr, restored.stderr
    at_restore = progress()
    wait_for(lambda: progress() > at_restore + 100_000, "the restored stream to flow on")
    store.sls("stop", "--store", str(store.path))


def test_a_worker_ending_after_a_checkpoint_is_not_seen_killed_by_its_server(group_store):
    """The fork snapshot of a worker that exits just after the thaw is an orphan, reaped by
    the server (PID 1 of the group): it must end as a child that exited, not as one killed
    by a signal (PostgreSQL's postmaster took such a child for a crashed backend and
    restarted them all, in crash recovery). targets/orphaning_server.py's workers end right
    after every checkpoint; the server reports any child a signal ended."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "srv", "--hz", "10", "--",
              sys.executable, str(TARGETS / "orphaning_server.py"))
    out = store.mnt / "orphans.out"
    wait_for(lambda: out.exists() and store.group("srv")["checkpoints"] >= 30, "30 checkpoints", timeout=120)
    lines = out.read_text().splitlines()
    store.sls("stop", "--store", str(store.path))
    assert len(lines) >= 20, lines
    assert not [line for line in lines if line.startswith("BAD")], [line for line in lines if line.startswith("BAD")]
