"""Holds a write lease being broken to a read lease (zdtm file_lease02): `broken_lease.py
OUTFILE DIR`. It opens DIR/leased for writing, takes a write lease, and breaks it itself
with a non-blocking open for reading (EWOULDBLOCK: the kernel downgrades the lease to
read, once the holder gives it up or lease-break-time has passed). Its SIGIO handler
counts break signals: exactly one is due. Then, every 5 ms, "<n> <pid> ok" while
F_GETLEASE shows the read lease and no further SIGIO came, a BAD line when not."""
import fcntl
import os
import signal
import sys
import time

out, directory = open(sys.argv[1], "w", buffering=1), sys.argv[2]
signals = []
signal.signal(signal.SIGIO, lambda *_: signals.append(1))
path = os.path.join(directory, "leased")
leased = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
fcntl.fcntl(leased, fcntl.F_SETLEASE, fcntl.F_WRLCK)
try:
    os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    out.write("BAD the open for reading did not break the lease\n")
except BlockingIOError:
    pass
while not signals:
    time.sleep(0.005)
n, pid = 0, os.getpid()
while True:
    lease = fcntl.fcntl(leased, fcntl.F_GETLEASE)
    n += 1
    if lease == fcntl.F_RDLCK and len(signals) == 1:
        out.write(f"{n:08d} {pid:7d} ok\n")
    else:
        out.write(f"BAD lease {lease} (F_RDLCK is {fcntl.F_RDLCK}), {len(signals)} SIGIO\n")
    time.sleep(0.005)
