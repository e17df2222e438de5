"""Two Python processes joined by a Unix socketpair with bytes in flight:
`socket_pair.py OUTFILE`. The child sends 4-byte numbers 0, 1, 2, ... as fast as the
socket takes them (so bytes are always queued); the parent receives one number per
5 ms, checks the sequence and its child, and appends "<n> <pid> ok". BAD on mismatch."""
import os
import socket
import struct
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
parent_end, child_end = socket.socketpair()
child = os.fork()
if child == 0:
    parent_end.close()
    k = 0
    while True:
        child_end.sendall(struct.pack("<I", k))
        k += 1
child_end.close()
pid, expect, n = os.getpid(), 0, 0
while True:
    data = b""
    while len(data) < 4:
        data += parent_end.recv(4 - len(data))
    got = struct.unpack("<I", data)[0]
    n += 1
    if got != expect or os.waitpid(child, os.WNOHANG) != (0, 0):
        out.write(f"BAD got {got} expected {expect}\n")
        sys.exit(1)
    expect += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
