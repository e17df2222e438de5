"""A job that gets stopped: `job_stop.py OUTFILE`. The parent forks a child with a second
thread; the child appends "<n> <pid> ok" every 5 ms (its thread bumps a counter the main
thread checks keeps moving) while the parent waits for it (WUNTRACED | WCONTINUED, as a
shell waits for a job). The test stops the child with SIGSTOP."""
import os
import sys
import threading
import time

out = open(sys.argv[1], "w", buffering=1)
child = os.fork()
if child == 0:
    ticks = [0]

    def tick() -> None:
        while True:
            ticks[0] += 1
            time.sleep(0.001)
    threading.Thread(target=tick, daemon=True).start()
    n, me, last = 0, os.getpid(), 0
    while True:
        n += 1
        if n % 100 == 0:
            if ticks[0] == last:
                out.write("BAD the second thread stopped ticking\n")
                sys.exit(1)
            last = ticks[0]
        out.write(f"{n:08d} {me:7d} ok\n")
        time.sleep(0.005)
while True:
    os.waitpid(child, os.WUNTRACED | os.WCONTINUED)
