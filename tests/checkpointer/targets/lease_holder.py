"""Holds file leases: `lease_holder.py OUTFILE DIR`: a read lease on DIR/read (opened
read-only) and a write lease on DIR/write (a small file opened for writing). A SIGIO (a
lease being broken: someone opened the file) is written as a BAD line; then, every 5 ms,
"<n> <pid> ok" while F_GETLEASE still shows both leases, a BAD line when it does not."""
import fcntl
import os
import signal
import sys
import time

out, directory = open(sys.argv[1], "w", buffering=1), sys.argv[2]
signal.signal(signal.SIGIO, lambda *_: out.write("BAD SIGIO: a lease is being broken\n"))
with open(os.path.join(directory, "write"), "w") as setup:
    setup.write("leased\n")
reading = os.open(os.path.join(directory, "read"), os.O_RDONLY | os.O_CREAT, 0o644)
writing = os.open(os.path.join(directory, "write"), os.O_WRONLY)
fcntl.fcntl(reading, fcntl.F_SETLEASE, fcntl.F_RDLCK)
fcntl.fcntl(writing, fcntl.F_SETLEASE, fcntl.F_WRLCK)
out.write("ready\n")
n, pid = 0, os.getpid()
while True:
    leases = (fcntl.fcntl(reading, fcntl.F_GETLEASE), fcntl.fcntl(writing, fcntl.F_GETLEASE))
    n += 1
    if leases == (fcntl.F_RDLCK, fcntl.F_WRLCK):
        out.write(f"{n:08d} {pid:7d} ok\n")
    else:
        out.write(f"BAD leases {leases}\n")
    time.sleep(0.005)
