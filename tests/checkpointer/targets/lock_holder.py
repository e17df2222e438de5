"""Holds file locks: `lock_holder.py OUTFILE DIR`: flock(LOCK_EX) on DIR/flock, a POSIX
write lock on bytes 10-19 and a read lock from byte 100 to the end of DIR/posix, an OFD
write lock on DIR/ofd; then a forked child shares the flock'ed file description (and
with them the flock and OFD locks). Writes "ready", then "<n> <pid> ok" every 5 ms."""
import fcntl
import os
import struct
import sys
import time

F_OFD_SETLK = 37
out, directory = open(sys.argv[1], "w", buffering=1), sys.argv[2]
flocked = open(os.path.join(directory, "flock"), "w")
fcntl.flock(flocked, fcntl.LOCK_EX | fcntl.LOCK_NB)
posix = open(os.path.join(directory, "posix"), "w+")
fcntl.lockf(posix, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10)
fcntl.lockf(posix, fcntl.LOCK_SH | fcntl.LOCK_NB, 0, 100)
ofd = open(os.path.join(directory, "ofd"), "w")
fcntl.fcntl(ofd, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
if os.fork() == 0:
    while True:
        time.sleep(1)
out.write("ready\n")
n, pid = 0, os.getpid()
while True:
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
