"""Holds O_PATH fds (zdtm symlink): `path_fds.py OUTFILE DIR`: one on the symbolic link
DIR/link itself (O_PATH | O_NOFOLLOW) and one on /dev/fuse, a device that is not opened
(O_PATH). Every 5 ms: "<n> <pid> ok" while both still lead to the same kind of file, with
O_PATH, else a BAD line."""
import fcntl
import os
import stat
import sys
import time

out, directory = open(sys.argv[1], "w", buffering=1), sys.argv[2]
link = os.path.join(directory, "link")
os.symlink("nowhere", link)
held = {
    "link": (os.open(link, os.O_PATH | os.O_NOFOLLOW), stat.S_ISLNK),
    "device": (os.open("/dev/fuse", os.O_PATH), stat.S_ISCHR),
}
n, pid = 0, os.getpid()
while True:
    wrong = [name for name, (fd, is_kind) in held.items()
             if not is_kind(os.fstat(fd).st_mode) or not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH]
    n += 1
    out.write(f"BAD {wrong}\n" if wrong else f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
