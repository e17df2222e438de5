"""Many separate pieces of shared anonymous memory: `many_shared.py OUTFILE COUNT`. Each
mmap(MAP_SHARED | MAP_ANONYMOUS) is its own object (a database's or a runtime's pools),
so the restore makes a memfd for each. Every 5 ms it checks that piece i still holds i
and bumps a counter in one of them, appending "<n> <pid> ok"."""
import mmap
import os
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
pieces = [mmap.mmap(-1, mmap.PAGESIZE) for _ in range(int(sys.argv[2]))]
for i, piece in enumerate(pieces):
    piece[:8] = i.to_bytes(8, "little")
pid, n = os.getpid(), 0
while True:
    n += 1
    for i, piece in enumerate(pieces):
        if int.from_bytes(piece[:8], "little") != i:
            out.write(f"BAD piece {i} holds {int.from_bytes(piece[:8], 'little')}\n")
            sys.exit(1)
    counter = pieces[n % len(pieces)]
    counter[8:16] = (int.from_bytes(counter[8:16], "little") + 1).to_bytes(8, "little")
    out.write(f"{n} {pid} ok\n")
    time.sleep(0.005)
