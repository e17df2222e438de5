"""A parent doing job control on its child in a loop: `stop_cont_loop.py OUTFILE`. The
child appends "<n> <pid> ok" to OUTFILE.child every 2 ms. The parent, in a loop, SIGSTOPs it, waits until
waitpid(WUNTRACED) reports it stopped, SIGCONTs it, and appends "<n> <pid> ok" (stress-ng
--kill does the same to its workers). The test checkpoints the child alone while the loop
runs: a stop signal arrives at any moment of its checkpoints, and the parent's loop stops
for ever if one of them loses it (its wait never reports the child stopped)."""
import os
import signal
import sys
import time

child = os.fork()
if child == 0:
    out = open(sys.argv[1] + ".child", "w", buffering=1)
    n, me = 0, os.getpid()
    while True:
        n += 1
        out.write(f"{n:08d} {me:7d} ok\n")
        time.sleep(0.002)
out = open(sys.argv[1], "w", buffering=1)
n, me = 0, os.getpid()
while True:
    os.kill(child, signal.SIGSTOP)
    while True:
        _, status = os.waitpid(child, os.WUNTRACED | os.WCONTINUED)
        if os.WIFSTOPPED(status):
            break
    time.sleep(0.0005)
    os.kill(child, signal.SIGCONT)
    n += 1
    out.write(f"{n:08d} {me:7d} ok\n")
    time.sleep(0.0005)
