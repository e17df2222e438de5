"""A memfd and shared anonymous memory, both shared by a parent and a child:
`memfd_share.py OUTFILE`. Both processes map them MAP_SHARED; the child increments a
counter in each every 2 ms (and copies the anonymous one 200 MiB further into that
256 MiB mapping, which is otherwise never touched); the parent keeps an fd on the memfd too, checks through the
mappings and pread that the counters only grow (and keep growing: the memory is still
shared after a restore) and that the memfd's 64 KiB pattern is intact, and appends
"<n> <pid> ok" every 5 ms."""
import mmap
import os
import struct
import sys
import time

from shared_word import word

out = open(sys.argv[1], "w", buffering=1)
fd = os.memfd_create("shared-state")
os.ftruncate(fd, 65536 + 8)
area = mmap.mmap(fd, 65536 + 8)
area[8:] = bytes(i % 251 for i in range(65536))
ANON_SIZE, FAR = 256 << 20, 200 << 20   # mostly untouched, as a database's shared buffers
anon = mmap.mmap(-1, ANON_SIZE)  # MAP_SHARED | MAP_ANONYMOUS
counter, anon_counter, far = word(area, 0), word(anon, 4096), word(anon, FAR)
child = os.fork()
if child == 0:
    while True:
        counter.value += 1
        anon_counter.value += 1
        far.value = anon_counter.value
        time.sleep(0.002)
pid, last, last_anon, n = os.getpid(), 0, 0, 0
while True:
    n += 1
    seen = counter.value
    via_fd = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
    if seen < last or via_fd < seen or area[8:16] != bytes(range(8)) or os.pread(fd, 4, 65536 + 4) != area[65540:65544]:
        out.write(f"BAD memfd counter {seen} after {last}\n")
        sys.exit(1)
    seen_anon = anon_counter.value
    if far.value + 1 < seen_anon:
        out.write("BAD the far page of the shared memory lost its counter\n")
        sys.exit(1)
    if n % 100 == 0 and (seen == last or seen_anon == last_anon):
        out.write("BAD the child's counting is not seen any more\n")
        sys.exit(1)
    if n % 100 == 0:
        last, last_anon = seen, seen_anon
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
