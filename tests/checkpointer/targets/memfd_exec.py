"""Executes a memfd and keeps an unlinked file open: `memfd_exec.py OUTFILE DIR`: a memfd
holding "#!/bin/true" (run with fexecve in a child, as runc runs its sealed copy) and
DIR/gone, opened O_WRONLY | O_APPEND and unlinked, and a file made O_TMPFILE in DIR. Runs the memfd once at the start and
again whenever DIR/run-now appears (removing it): "exec ok", or "BAD exec ..." if the child
did not exit 0. Every 5 ms: "<n> <pid> ok" while the unlinked files' F_GETFL flags are still
the ones they had, BAD if not."""
import fcntl
import os
import sys
import time

out, directory = open(sys.argv[1], "w", buffering=1), sys.argv[2]
memfd = os.memfd_create("script", 0)
os.write(memfd, b"#!/bin/true\n")
os.set_inheritable(memfd, True)
gone = os.path.join(directory, "gone")
unlinked = os.open(gone, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.unlink(gone)
flags = fcntl.fcntl(unlinked, fcntl.F_GETFL)
nameless = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)   # never had a name
nameless_flags = fcntl.fcntl(nameless, fcntl.F_GETFL)
run_now = os.path.join(directory, "run-now")


def run_memfd() -> None:
    child = os.fork()
    if child == 0:
        try:
            os.execve(memfd, ["true"], {})
        except OSError as exc:
            os._exit(exc.errno)
    status = os.waitpid(child, 0)[1]
    out.write("exec ok\n" if status == 0 else f"BAD exec: the child's status is {status:#x}\n")


run_memfd()
n, pid = 0, os.getpid()
while True:
    if os.path.exists(run_now):
        os.unlink(run_now)
        run_memfd()
    now = (fcntl.fcntl(unlinked, fcntl.F_GETFL), fcntl.fcntl(nameless, fcntl.F_GETFL))
    n += 1
    good = now == (flags, nameless_flags)
    out.write(f"{n:08d} {pid:7d} ok\n" if good else f"BAD flags {now}, not {(flags, nameless_flags)}\n")
    time.sleep(0.005)
