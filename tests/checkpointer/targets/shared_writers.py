"""Processes writing into shared anonymous memory, each also keeping what it wrote in its
own private memory: `shared_writers.py OUTFILE FORK_EVERY`. A 64 MiB MAP_SHARED|MAP_ANONYMOUS
mapping, 16 MiB of it touched, as a database's shared buffers. Two forked workers count:
each keeps its count `n` in a local variable and in its slot of the shared memory, and
writes `n` into one more page of the touched part that moves on every step. The parent
forks a short-lived child every FORK_EVERY steps (of 4 ms) that writes a value into its own page and exits;
the parent keeps the value it asked for. Everyone checks, before each step, that the shared
memory holds what its private memory says was written: a checkpoint that missed a write to
the shared memory (by a worker, or by a child gone since) makes the restored copy print
BAD. Each process appends "<n> <pid> ok" lines."""
import mmap
import os
import struct
import sys
import time

SIZE, TOUCHED, SLOT, EPHEMERAL = 64 << 20, 16 << 20, 20 << 20, 30 << 20
out = open(sys.argv[1], "w", buffering=1)
FORK_EVERY = int(sys.argv[2])
shared = mmap.mmap(-1, SIZE)
for offset in range(0, TOUCHED, 4096):
    shared[offset:offset + 8] = struct.pack("<Q", offset)


def bad(what: str) -> None:
    out.write(f"BAD {os.getpid()} {what}\n")
    os._exit(1)


def worker(k: int) -> None:
    n, slot = 0, SLOT + k * 4096
    while True:
        held = struct.unpack_from("<Q", shared, slot)[0]
        if held != n:
            bad(f"worker {k}: its shared count is {held}, its own {n}")
        spread = (n * 7 + k * 3) % (TOUCHED // 4096) * 4096 + 8 + 8 * k   # a page that moves on
        n += 1
        struct.pack_into("<Q", shared, spread, n)
        struct.pack_into("<Q", shared, slot, n)
        if n % 20 == 0:
            out.write(f"{n:08d} {os.getpid():7d} ok\n")
        time.sleep(0.001)


for k in range(2):
    if os.fork() == 0:
        worker(k)
n, expected = 0, 0
while True:
    held = struct.unpack_from("<Q", shared, EPHEMERAL)[0]
    if held != expected:
        bad(f"the short-lived child's value is {held}, expected {expected}")
    n += 1
    if n % FORK_EVERY == 0:
        expected = n
        child = os.fork()
        if child == 0:
            struct.pack_into("<Q", shared, EPHEMERAL, n)
            os._exit(0)
        os.waitpid(child, 0)
    out.write(f"{n:08d} {os.getpid():7d} ok\n")
    time.sleep(0.004)
