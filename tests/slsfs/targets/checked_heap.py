"""A self-checking target with a large heap: usage `checked_heap.py MIB` (cwd: the mount).

Fills MIB MiB with random bytes and keeps a CRC of each MiB. Then forever: checks the
CRC of one MiB (in turn), rewrites a few bytes of it (new CRC), appends "<n> ok" to
heap.log (n: a counter in memory, through one fd kept open) and sleeps 2 ms. A wrong
CRC appends "BAD <n> mib <i>" and exits 3. After a restore the memory (heap, CRCs,
counter) and heap.log come from the same instant, so the lines go on unbroken.
"""
import os
import sys
import time
import zlib

MIB = 1 << 20
count = int(sys.argv[1])
heap = bytearray(os.urandom(count * MIB))
crcs = [zlib.crc32(memoryview(heap)[i * MIB:(i + 1) * MIB]) for i in range(count)]
log = os.open("heap.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
n = 0
while True:
    i = n % count
    view = memoryview(heap)[i * MIB:(i + 1) * MIB]
    if zlib.crc32(view) != crcs[i]:
        os.write(log, f"BAD {n} mib {i}\n".encode())
        sys.exit(3)
    view[n % MIB] = (view[n % MIB] + 1) % 256
    crcs[i] = zlib.crc32(view)
    view.release()
    os.write(log, f"{n} ok\n".encode())
    n += 1
    time.sleep(0.002)
