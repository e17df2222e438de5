"""A pre-forking server whose workers end right after a checkpoint: `orphaning_server.py`
(run as a group: PID 1 of its namespace, so orphans come to it). It holds 48 MiB of
touched memory (a worker's first capture then takes a fork snapshot), forks a worker,
reaps every child with waitpid(-1) and forks another. A worker sleeps 1 ms at a time and
exits as soon as a sleep took over 3 ms (it was frozen: it ends just after the thaw, while
its snapshot may still be copied). A child of ours that a signal ended is a crash, as
PostgreSQL's postmaster sees it: "BAD <pid> signal <n>" in ./orphans.out; else each reap
appends "<n> <pid> ok"."""
import os
import time

memory = bytearray(48 << 20)
for at in range(0, len(memory), 4096):
    memory[at] = 1
out = open("orphans.out", "w", buffering=1)
n = 0
while True:
    worker = os.fork()
    if worker == 0:
        while True:
            before = time.monotonic()
            time.sleep(0.001)
            if time.monotonic() - before > 0.003:
                os._exit(0)
    while True:
        pid, status = os.waitpid(-1, 0)
        n += 1
        if os.WIFSIGNALED(status):
            out.write(f"BAD {pid} signal {os.WTERMSIG(status)}\n")
        else:
            out.write(f"{n:08d} {os.getpid():7d} ok\n")
        if pid == worker:
            break
