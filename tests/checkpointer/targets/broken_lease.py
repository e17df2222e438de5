"""Holds write leases being broken (zdtm file_lease02): `broken_lease.py OUTFILE DIR`. It
opens DIR/leased and DIR/ending for writing, takes a write lease on each, and breaks them
itself with non-blocking opens (EWOULDBLOCK): DIR/leased's for reading (the kernel
downgrades that lease to read, once the holder gives it up or lease-break-time has passed),
DIR/ending's for writing (that lease goes). Its SIGIO handler counts break signals:
exactly two are due. Then, every 5 ms, "<n> <pid> ok" while F_GETLEASE shows the read lease
and none on the other and no further SIGIO came, a BAD line when not."""
import fcntl
import os
import signal
import sys
import time

out, directory = open(sys.argv[1], "w", buffering=1), sys.argv[2]
signals = []
signal.signal(signal.SIGIO, lambda *_: signals.append(1))


def broken(name: str, opened_again: int) -> int:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    try:
        os.close(os.open(path, opened_again | os.O_NONBLOCK))
        out.write(f"BAD opening {name} again did not break its lease\n")
    except BlockingIOError:
        pass
    return fd


leased, ending = broken("leased", os.O_RDONLY), broken("ending", os.O_WRONLY)
while len(signals) < 2:
    time.sleep(0.005)
n, pid = 0, os.getpid()
while True:
    leases = (fcntl.fcntl(leased, fcntl.F_GETLEASE), fcntl.fcntl(ending, fcntl.F_GETLEASE))
    n += 1
    if leases == (fcntl.F_RDLCK, fcntl.F_UNLCK) and len(signals) == 2:
        out.write(f"{n:08d} {pid:7d} ok\n")
    else:
        out.write(f"BAD leases {leases} (F_RDLCK {fcntl.F_RDLCK}, F_UNLCK {fcntl.F_UNLCK}), {len(signals)} SIGIO\n")
    time.sleep(0.005)
