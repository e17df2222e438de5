"""fsync durability through the store's fsync worker (mount.sync_thread): SQLite
transactions from two processes at once, the daemon SIGKILLed mid-stream; every
acknowledged commit is in the database after the remount and the database is whole."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
import subprocess
import sys

from mount_helpers import sls

INSERTER = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
db.execute("PRAGMA synchronous = EXTRA")   # FULL leaves the journal's unlink (the commit point) unsynced
who = int(sys.argv[2])


def retried(sql, *args):
    # SQLite's lock is not fair: under load the other writer, re-taking it right after each
    # commit, kept this one out past the busy timeout ("database is locked"): wait on
    while True:
        try:
            return db.execute(sql, *args)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise


n = 0
while True:
    n += 1
    retried("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, ?, ?)", (who, n, "x" * (100 + n % 700)))
    retried("COMMIT")                # durable when this returns
    print(n, flush=True)
"""
WRITERS = 2
ACKED_EACH = 25


def test_sqlite_commits_acknowledged_before_a_daemon_sigkill_survive(new_mount):
    mnt = new_mount()
    path = mnt.path / "app.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (who INTEGER, n INTEGER, payload TEXT, PRIMARY KEY (who, n))")
    writers = [subprocess.Popen([sys.executable, "-c", INSERTER, str(path), str(who)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for who in range(WRITERS)]
    acked: dict[int, int] = {}
    try:
        for who, writer in enumerate(writers):      # reads block until each has committed enough
            while acked.get(who, 0) < ACKED_EACH:
                line = writer.stdout.readline()
                assert line, f"writer {who} stopped early (exit status {writer.wait()}): {writer.stderr.read()}"
                acked[who] = int(line)
        mnt.kill()                                  # both still inserting
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    mnt.mount("--force")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for who, last in acked.items():
            have = {n for (n,) in db.execute("SELECT n FROM t WHERE who = ?", (who,))}
            assert set(range(1, last + 1)) <= have, f"writer {who}: acknowledged rows lost"
    mnt.umount()
    fsck = json.loads(sls("fsck", mnt.store, "--json").stdout)
    assert fsck["clean"], fsck["problems"]
