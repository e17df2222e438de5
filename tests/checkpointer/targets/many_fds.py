"""Target: hundreds of fds, each watched by one epoll, for test_ckpt_many_fds.py.

argv: OUT PORT N. Opens N TCP connections to 127.0.0.1:PORT (every other one
non-blocking, every third one inheritable) and N Unix socket pairs (one byte queued
for the end it keeps watched), watches every connection and every such end in one
epoll (its data: the fd number), prints "ready <fds>", then waits for the file OUT.check.
Then (restored: the TCP peers are gone, so every watched fd is readable) it polls until
each watched fd has reported an event under its own number, checks the fd flags, and
prints "ok <count>" or "bad <what>"."""
import fcntl
import os
import select
import socket
import sys
import time

out, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
poller = select.epoll()
flags: dict[int, tuple[bool, bool]] = {}   # fd -> (non-blocking, inheritable)
keep = []
for i in range(count):
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setblocking(i % 2 == 0)
    os.set_inheritable(conn.fileno(), i % 3 == 0)
    ours, theirs = socket.socketpair()
    theirs.sendall(b"x")
    keep += [conn, ours, theirs]
    for sock in (conn, ours):
        poller.register(sock.fileno(), select.EPOLLIN)
        flags[sock.fileno()] = (not sock.getblocking(), os.get_inheritable(sock.fileno()))


def report(line: str) -> None:
    with open(out, "a") as f:
        f.write(line + "\n")


report(f"ready {len(flags)}")
while not os.path.exists(out + ".check"):
    time.sleep(0.02)
seen: set[int] = set()
deadline = time.monotonic() + 60
while seen != set(flags) and time.monotonic() < deadline:
    for fd, _ in poller.poll(1.0):
        if fd not in flags:
            report(f"bad event for fd {fd}, not watched")
            sys.exit(1)
        seen.add(fd)
wrong = [fd for fd, (nonblocking, inheritable) in flags.items()
         if bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK) != nonblocking or os.get_inheritable(fd) != inheritable]
if seen != set(flags):
    report(f"bad no event from {len(set(flags) - seen)} fds, e.g. {sorted(set(flags) - seen)[:5]}")
elif wrong:
    report(f"bad flags of {len(wrong)} fds, e.g. {wrong[:5]}")
else:
    report(f"ok {len(seen)}")
while True:
    time.sleep(1)
