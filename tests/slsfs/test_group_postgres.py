"""PostgreSQL in a persistence group: its cluster is made on a plain `sls mount`, `sls run`
takes that mount over, the server (running as user postgres, with its shared memory,
background workers and WAL) is SIGKILLed together with the daemon, its POSIX and SysV
shared memory removed as a reboot would, and `sls restore` brings it back where it was: every row committed up to the checkpoint is there, the
server answers and takes writes at once, and it never went through crash recovery
(memory and files came back from the same instant)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from group_helpers import GroupStore, wait_for

BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
pytestmark = pytest.mark.skipif(BIN is None or shutil.which("setpriv") is None,
                                reason="PostgreSQL is not installed (make setup installs it)")


@pytest.fixture
def pg_store(short_tmp):
    """A group store in a directory user postgres may traverse (pytest's are root-only)."""
    top = Path(tempfile.mkdtemp(prefix="pg-", dir=short_tmp))
    os.chmod(top, 0o711)
    store = GroupStore(top)
    before = postgres_shared_memory()
    try:
        yield store
    finally:
        store.cleanup()
        shutil.rmtree(top, ignore_errors=True)
        forget_shared_memory(tuple(now - then for now, then in zip(postgres_shared_memory(), before)))


def postgres_shared_memory() -> tuple[set[str], set[int]]:
    """PostgreSQL's POSIX shared memory files and the SysV segments of user postgres that
    nothing attaches: what a SIGKILLed server leaves behind."""
    files = {str(p) for p in Path("/dev/shm").glob("PostgreSQL.*")}
    uid = pwd.getpwnam("postgres").pw_uid
    with open("/proc/sysvipc/shm") as f:
        next(f)
        segments = {int(fields[1]) for fields in map(str.split, f) if int(fields[6]) == 0 and int(fields[7]) == uid}
    return files, segments


def as_postgres(*argv: str) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sql(port: int, query: str) -> list[str] | None:
    """psql's rows, or None while the server does not answer (psql's error: LAST_ERROR)."""
    result = subprocess.run(as_postgres(f"{BIN}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                        "-d", "postgres", "-Atq", "-c", query),
                            capture_output=True, text=True, timeout=60)
    LAST_ERROR[:] = [result.stderr.strip()]
    return result.stdout.split() if result.returncode == 0 else None


LAST_ERROR = [""]


def shared_memory_of(pid: int) -> tuple[set[str], set[int]]:
    """The POSIX shared memory files and the SysV segment ids of the host's IPC namespace the
    process tree maps (none for a group: its segments die with its own IPC namespace)."""
    files, segments = set(), set()
    host = os.stat("/proc/self/ns/ipc").st_ino
    for member in tree(pid):
        try:
            with open(f"/proc/{member}/maps") as f:
                maps = [line.split() for line in f]
            in_host = os.stat(f"/proc/{member}/ns/ipc").st_ino == host
        except (FileNotFoundError, ProcessLookupError):   # a backend that just ended (or ends as we read)
            continue
        for fields in maps:
            if len(fields) >= 6 and fields[5].startswith("/dev/shm/"):
                files.add(fields[5])
            elif len(fields) >= 6 and fields[5].startswith("/SYSV") and in_host:
                segments.add(int(fields[4]))
    return files, segments


def tree(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        kids = []
    return [pid] + [p for kid in kids for p in tree(int(kid))]


def forget_shared_memory(memory: tuple[set[str], set[int]]) -> None:
    files, segments = memory
    for path in files:
        if os.path.exists(path):
            os.unlink(path)
    for shmid in segments:
        subprocess.run(["ipcrm", "-m", str(shmid)], check=True)


def test_postgres_is_restored_without_crash_recovery(pg_store):
    store = pg_store
    owner = pwd.getpwnam("postgres")
    store.mnt.mkdir()
    store.sls("mount", "--allow-other", str(store.path), str(store.mnt))
    data = store.mnt / "pg"
    data.mkdir(mode=0o700)
    os.chown(data, owner.pw_uid, owner.pw_gid)
    made = subprocess.run(as_postgres(f"{BIN}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres",
                                      "--no-sync"), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, f"initdb failed:\n{made.stdout}\n{made.stderr}"

    port = free_port()
    store.sls("run", "--store", str(store.path), "--name", "pg", "--hz", "2", "--",
              *as_postgres(f"{BIN}/postgres", "-D", str(data), "-p", str(port), "-k", "",
                           "-c", "listen_addresses=127.0.0.1"))
    wait_for(lambda: sql(port, "select 1") == ["1"], "the server to answer", timeout=120)
    assert sql(port, "create table t(id serial primary key, v text); "
                     "insert into t(v) select 'row ' || g from generate_series(1, 1000) g; "
                     "select count(*) from t") == ["1000"]
    store.checkpoint("pg")
    log = store.path / "group-pg.out"
    assert sql(port, "insert into t(v) values ('after the checkpoint'); select count(*) from t") == ["1001"], \
        f"psql: {LAST_ERROR[0]}\nserver log tail:\n{log.read_text()[-2000:]}"
    before = log.read_text()

    memory = shared_memory_of(store.group("pg")["pids"][0])
    store.crash()
    forget_shared_memory(memory)                      # as a reboot would
    store.sls("restore", "pg", "--store", str(store.path))
    rows = wait_for(lambda: sql(port, "select count(*), count(distinct id) from t"), "the restored server",
                    timeout=120)
    assert rows[0] in ("1000|1000", "1001|1001"), rows
    # A periodic checkpoint can catch the backend of the insert after the named checkpoint inside
    # its commit (waiting on its WAL fsync): restored, that backend finishes the commit, so its row
    # may become visible after the first count (seen at load 10-18).
    rows = sql(port, "insert into t(v) values ('after the restore'); select count(*), count(distinct id), "
                     "count(*) filter (where v = 'after the checkpoint') from t")
    total, distinct, carried = map(int, rows[0].split("|"))
    assert total == distinct == 1001 + carried and carried <= 1, rows
    after = log.read_text()[len(before):]
    assert "recovery" not in after and "interrupted" not in after, f"the server recovered:\n{after}"
    memory = shared_memory_of(store.group("pg")["pids"][0])
    store.sls("stop", "--store", str(store.path))
    forget_shared_memory(memory)                      # a SIGKILLed server leaves it behind
