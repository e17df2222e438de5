"""Works in removed directories: `removed_cwd.py OUTFILE DIR`: the parent works in
DIR/up/held, which it also holds open, the child it forks in DIR/gone; all three are removed. Every 5 ms each
writes "<n> <pid> ok" while its working directory is still shown (/proc/self/cwd) as the
removed DIR/held or DIR/gone and, in the parent, is the directory its fd holds; BAD if not."""
import os
import sys
import time

out, directory = sys.argv[1], sys.argv[2]
held, gone = os.path.join(directory, "up", "held"), os.path.join(directory, "gone")
os.makedirs(held)
os.mkdir(gone)
fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
child = os.fork() == 0
mine = gone if child else held
os.chdir(mine)
time.sleep(0.2)
if not child:
    os.rmdir(held)
    os.rmdir(os.path.dirname(held))
    os.rmdir(gone)
    os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
while not os.path.exists(out) or os.path.isdir(gone):
    time.sleep(0.01)
log = open(out, "a", buffering=1)
log.write("ready\n")
n, pid = 0, os.getpid()
while True:
    n += 1
    cwd = os.readlink("/proc/self/cwd")
    same = child or os.fstat(fd).st_ino == os.stat(".").st_ino
    if cwd == mine + " (deleted)" and same:
        log.write(f"{n:08d} {pid:7d} ok\n")
    else:
        log.write(f"BAD {pid}: cwd {cwd}, the same as the fd's: {same}\n")
    time.sleep(0.005)
