"""Two Python processes joined by a Unix socketpair (or, with FIFO, by that named pipe)
with bytes in flight: `socket_pair.py OUTFILE [FIFO]`. The child sends 4-byte numbers
0, 1, 2, ... as fast as the channel takes them (so bytes are always queued); the parent
receives one number per 5 ms, checks the sequence and its child, and appends
"<n> <pid> ok". BAD on mismatch."""
import os
import socket
import struct
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
if len(sys.argv) > 2:
    os.mkfifo(sys.argv[2])
    parent_end = os.open(sys.argv[2], os.O_RDONLY | os.O_NONBLOCK)  # does not wait for a writer
    os.set_blocking(parent_end, True)
else:
    parent_end, child_end = (s.detach() for s in socket.socketpair())
child = os.fork()
if child == 0:
    os.close(parent_end)
    if len(sys.argv) > 2:
        child_end = os.open(sys.argv[2], os.O_WRONLY)
    k = 0
    while True:
        data = struct.pack("<I", k)
        while data:
            data = data[os.write(child_end, data):]
        k += 1
if len(sys.argv) == 2:
    os.close(child_end)
pid, expect, n = os.getpid(), 0, 0
while True:
    data = b""
    while len(data) < 4:
        data += os.read(parent_end, 4 - len(data))
    got = struct.unpack("<I", data)[0]
    n += 1
    if got != expect or os.waitpid(child, os.WNOHANG) != (0, 0):
        out.write(f"BAD got {got} expected {expect}\n")
        sys.exit(1)
    expect += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
