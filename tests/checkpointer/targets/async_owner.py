"""Gets a signal for every byte that reaches a pipe: `async_owner.py OUTFILE`: the pipe's read
end is O_ASYNC, owned by this process (F_SETOWN) with SIGUSR2 as its signal (F_SETSIG).
Every 5 ms it writes a byte into the pipe and waits up to 10 s for the signal, then writes
"<n> <pid> ok", or a BAD line if the signal did not come or the owner or signal changed."""
import fcntl
import os
import signal
import sys
import time

F_SETSIG, F_GETSIG = 10, 11
out = open(sys.argv[1], "w", buffering=1)
received = 0


def on_signal(*_) -> None:
    global received
    received += 1


signal.signal(signal.SIGUSR2, on_signal)
reader, writer = os.pipe()
fcntl.fcntl(reader, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(reader, F_SETSIG, signal.SIGUSR2)
fcntl.fcntl(reader, fcntl.F_SETFL, fcntl.fcntl(reader, fcntl.F_GETFL) | os.O_ASYNC | os.O_NONBLOCK)
n, pid = 0, os.getpid()
while True:
    before = received
    os.write(writer, b"x")
    deadline = time.monotonic() + 10
    while received == before and time.monotonic() < deadline:
        time.sleep(0.001)
    os.read(reader, 64)
    owner, sig = fcntl.fcntl(reader, fcntl.F_GETOWN), fcntl.fcntl(reader, F_GETSIG)
    n += 1
    if received == before or owner != pid or sig != signal.SIGUSR2:
        out.write(f"BAD signals {received - before}, owner {owner}, signal {sig}\n")
    else:
        out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
