"""Works in the /proc directory of a process that has ended (zdtm unhashed_proc; a shell
left in /proc/PID after that process exited): `proc_cwd.py OUTFILE`. It forks a child,
chdir()s into /proc/CHILD, kills and reaps the child: its working directory is now a
removed directory that nobody can make again. Writes "ready", then waits for a file
"read-now" beside OUTFILE (removes it) and writes "read ok" if its working directory is
still a removed one (getcwd fails with ENOENT, /proc/self/cwd ends in " (deleted)", it
lists nothing), else "BAD ..."."""
import errno
import os
import signal
import sys
import time


def removed_cwd() -> str:
    """Why the working directory is not a removed one, or ''."""
    try:
        return f"getcwd answers {os.getcwd()}"
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            return f"getcwd fails with {exc}"
    link = os.readlink("/proc/self/cwd")
    if not link.endswith(" (deleted)"):
        return f"/proc/self/cwd is {link}"
    try:
        entries = os.listdir(".")
    except OSError:
        entries = []
    return f"it lists {entries}" if entries else ""


out = open(sys.argv[1], "w", buffering=1)
read_now = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "read-now")
child = os.fork()
if child == 0:
    time.sleep(600)
    os._exit(0)
os.chdir(f"/proc/{child}")
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
why = removed_cwd()
if why:
    out.write(f"BAD before the checkpoint: {why}\n")
    sys.exit(1)
out.write("ready\n")
while not os.path.exists(read_now):
    time.sleep(0.005)
os.unlink(read_now)
why = removed_cwd()
out.write(f"BAD {why}\n" if why else "read ok\n")
time.sleep(600)
