"""Waits until OUTFILE.go exists, then exits with the status written in it (a number), or
kills itself with SIGTERM if it says "TERM": `exits_when_told.py OUTFILE`. Writes
"waiting" to OUTFILE first."""
import os
import signal
import sys
import time

go = sys.argv[1] + ".go"
with open(sys.argv[1], "w") as out:
    out.write("waiting\n")
while not os.path.exists(go):
    time.sleep(0.02)
told = open(go).read().strip()
if told == "TERM":
    os.kill(os.getpid(), signal.SIGTERM)
sys.exit(int(told))
