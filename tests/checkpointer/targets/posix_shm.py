"""POSIX shared memory (shm_open, as PostgreSQL's dynamic shared memory uses): `posix_shm.py
OUTFILE NAME`. Maps /dev/shm/NAME (and closes its fd), then counts in memory and, at
offset 4096, in the segment; each step checks that the two agree (so a segment that came
back empty, or from another instant, is reported) and appends "<n> <pid> ok"."""
import mmap
import os
import struct
import sys
import time

import _posixshmem

out = open(sys.argv[1], "w", buffering=1)
fd = _posixshmem.shm_open(sys.argv[2], os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
os.ftruncate(fd, 1 << 20)
area = mmap.mmap(fd, 1 << 20)
os.close(fd)
pid, n = os.getpid(), 0
while True:
    seen = struct.unpack_from("<Q", area, 4096)[0]
    if seen != n:
        out.write(f"BAD the segment says {seen}, memory says {n}\n")
        sys.exit(1)
    n += 1
    struct.pack_into("<Q", area, 4096, n)
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
