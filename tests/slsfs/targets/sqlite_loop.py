"""SQLite transaction loop (a target): one committed row per step in app.db of the cwd.

Keeps the number of committed rows in memory and checks, before each transaction,
that the database holds exactly rows 1..n; on a mismatch it writes app.db.bad and
exits 3. After a restore, memory and database come from the same instant."""
import sqlite3
import sys
import time

db = sqlite3.connect("app.db", isolation_level=None)
db.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
n = db.execute("SELECT count(*) FROM t").fetchone()[0]
while True:
    have = db.execute("SELECT coalesce(max(i), 0), count(*) FROM t").fetchone()
    if have != (n, n):
        with open("app.db.bad", "a") as bad:
            bad.write(f"MISMATCH memory={n} database={have}\n")
        sys.exit(3)
    n += 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, ?)", (n, f"row {n} " + "x" * 200))
    db.execute("COMMIT")
    with open("committed", "w") as f:
        f.write(str(n))
    time.sleep(0.002)
