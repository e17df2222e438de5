"""A job stopped by ^Z, as a shell sees it: `tstp_job.py OUTFILE`. The parent forks a child
that makes its own process group (a shell's job: the group is not orphaned, its parent is
in another group of the same session, so SIGTSTP stops it) and then idles; the parent
waits for it as a shell does (WUNTRACED | WCONTINUED) and appends a line per change it
sees: "stopped <signal number>" or "continued"."""
import os
import sys
import time

out = open(sys.argv[1], "a", buffering=1)   # appends: a restore rewinds no line
child = os.fork()
if child == 0:
    os.setpgid(0, 0)
    while True:
        time.sleep(1)
os.setpgid(child, child)   # (either may run first)
out.write(f"child {child}\n")
while True:
    _, status = os.waitpid(child, os.WUNTRACED | os.WCONTINUED)
    out.write(f"stopped {os.WSTOPSIG(status)}\n" if os.WIFSTOPPED(status) else "continued\n")
