"""Shared anonymous memory beside a lot of private writing: `shared_and_private.py OUTFILE`.
A 16 MiB MAP_SHARED|MAP_ANONYMOUS mapping, touched whole once; then each step writes one
counter into it and rewrites 16 MiB of private memory (so that an incremental checkpoint
copies its pages through a fork snapshot), and appends "<n> <pid> ok"."""
import mmap
import os
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
shared = mmap.mmap(-1, 16 << 20)
shared[:] = bytes(range(256)) * (len(shared) // 256)
private = bytearray(16 << 20)
pid, n = os.getpid(), 0
while True:
    n += 1
    shared[8:16] = n.to_bytes(8, "little")
    private[::4096] = bytes([n % 256]) * len(private[::4096])
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.01)
