"""Writes through a name it unlinked while the file keeps another one: `linked_writer.py
OUTFILE DATA`. Opens DATA for writing, links it as DATA.link, unlinks DATA (its fd now shows
"DATA (deleted)", the file still reachable as DATA.link), then forever writes "<n>\\n" to
it, appends "<n> <pid> ok" to OUTFILE and sleeps 5 ms."""
import os
import sys
import time

out = open(sys.argv[1], "a", buffering=1)
data = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.link(sys.argv[2], sys.argv[2] + ".link")
os.unlink(sys.argv[2])
n, me = 0, os.getpid()
while True:
    n += 1
    os.write(data, f"{n}\n".encode())
    out.write(f"{n:08d} {me:7d} ok\n")
    time.sleep(0.005)
