"""Reads its own /proc entry by its PID, as psutil, a JVM or `ps -p $$` do:
`proc_by_pid.py OUTFILE`. Forever: reads /proc/self/stat, /proc/<getpid()>/stat and
/proc/self/stat again and checks the middle one is the same process (the same start time),
appends "<n> <pid> ok" to OUTFILE and sleeps 5 ms; a mismatch (or no such entry) writes a
BAD line and exits 1. A restore gives the process a new start time: one that falls between
the reads (the two of /proc/self differ) makes it read them again."""
import os
import sys
import time


def start_time(path: str) -> str:
    with open(path) as fh:
        return fh.read().rpartition(")")[2].split()[19]


out = open(sys.argv[1], "a", buffering=1)
n = 0
while True:
    me = os.getpid()
    try:
        before = start_time("/proc/self/stat")
        by_pid = start_time(f"/proc/{me}/stat")
        after = start_time("/proc/self/stat")
    except OSError as exc:
        out.write(f"BAD /proc/{me}: {exc}\n")
        sys.exit(1)
    if before != after:
        continue
    if by_pid != before:
        out.write(f"BAD /proc/{me} is another process\n")
        sys.exit(1)
    n += 1
    out.write(f"{n:08d} {me:7d} ok\n")
    time.sleep(0.005)
