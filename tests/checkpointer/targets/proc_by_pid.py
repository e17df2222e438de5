"""Reads its own /proc entry by its PID, as psutil, a JVM or `ps -p $$` do:
`proc_by_pid.py OUTFILE`. Forever: reads /proc/<getpid()>/stat and /proc/self/stat and
checks they are the same process (the same start time), appends "<n> <pid> ok" to OUTFILE
and sleeps 5 ms; a mismatch (or no such entry) writes a BAD line and exits 1."""
import os
import sys
import time


def start_time(path: str) -> str:
    with open(path) as fh:
        return fh.read().rpartition(")")[2].split()[19]


out = open(sys.argv[1], "a", buffering=1)
n = 0
while True:
    n += 1
    me = os.getpid()
    try:
        same = start_time(f"/proc/{me}/stat") == start_time("/proc/self/stat")
    except OSError as exc:
        same = False
        out.write(f"BAD /proc/{me}: {exc}\n")
    if not same:
        out.write(f"BAD /proc/{me} is another process\n")
        sys.exit(1)
    out.write(f"{n:08d} {me:7d} ok\n")
    time.sleep(0.005)
