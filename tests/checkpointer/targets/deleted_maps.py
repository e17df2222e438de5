"""Mappings of deleted files: `deleted_maps.py OUTFILE DIR`.

- a POSIX-semaphore-like page: a /dev/shm file mapped MAP_SHARED, closed and unlinked
  (sem_open + sem_unlink, as Python's multiprocessing does), shared with a forked child
  that increments a counter in it every 2 ms;
- a /dev/shm file mapped MAP_SHARED and unlinked while its fd stays open: the parent
  writes a sequence number through the fd and reads it back through the mapping;
- DIR/private.bin: three pages mapped MAP_PRIVATE, closed and unlinked, page 1 then
  written privately.
The parent checks all three every 5 ms (the counter only grows and keeps growing; fd and
mapping agree; the private pages keep the file's pattern and the private write) and
appends "<n> <pid> ok"."""
import mmap
import os
import struct
import sys
import time

from shared_word import word

out, directory = open(sys.argv[1], "w", buffering=1), sys.argv[2]
PAGE = 4096


def made_and_unlinked(path: str, size: int, fill: bytes = b"") -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.ftruncate(fd, size)
    os.pwrite(fd, fill, 0)
    os.unlink(path)
    return fd


fd = made_and_unlinked(f"/dev/shm/slsfs-test-sem-{os.getpid()}", PAGE)
semaphore = mmap.mmap(fd, PAGE)
shared_counter = word(semaphore, 0)
os.close(fd)
shm_fd = made_and_unlinked(f"/dev/shm/slsfs-test-fd-{os.getpid()}", PAGE)
through_fd = mmap.mmap(shm_fd, PAGE)
pattern = bytes(i % 253 for i in range(3 * PAGE))
fd = made_and_unlinked(os.path.join(directory, "private.bin"), 3 * PAGE, pattern)
private = mmap.mmap(fd, 3 * PAGE, flags=mmap.MAP_PRIVATE)
os.close(fd)
private[PAGE:PAGE + 5] = b"mine!"
expected = pattern[:PAGE] + b"mine!" + pattern[PAGE + 5:]

if os.fork() == 0:
    while True:
        shared_counter.value += 1
        time.sleep(0.002)
pid, last, n = os.getpid(), 0, 0
while True:
    n += 1
    os.pwrite(shm_fd, struct.pack("<Q", n), 8)
    seen = shared_counter.value
    if seen < last:
        out.write(f"BAD the shared counter went back from {last} to {seen}\n")
        sys.exit(1)
    if struct.unpack_from("<Q", through_fd, 8)[0] != n:
        out.write("BAD a write through the fd is not seen in the mapping\n")
        sys.exit(1)
    if private[:] != expected:
        out.write("BAD the private mapping of the deleted file changed\n")
        sys.exit(1)
    if n % 100 == 0:
        if seen == last:
            out.write("BAD the child's counting is not seen any more\n")
            sys.exit(1)
        last = seen
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
