"""A process with thousands of mappings: `many_mappings.py OUTFILE PAGES [advised]`. One
private anonymous mapping of PAGES pages, each page filled with its own number, every other
page made read-only (so the kernel keeps PAGES separate mappings); with `advised`, each
page also given three pieces of advice (MADV_RANDOM, MADV_DONTDUMP, MADV_HUGEPAGE: four
calls per mapping to make it again). Every 5 ms: checks the next 64 pages and writes
"<n> <pid> ok", or a BAD line naming the first wrong page."""
import ctypes
import mmap
import os
import sys
import time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
out = open(sys.argv[1], "w", buffering=1)
pages = int(sys.argv[2])
area = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for page in range(pages):
    area[page * mmap.PAGESIZE:(page + 1) * mmap.PAGESIZE] = page.to_bytes(4, "little") * (mmap.PAGESIZE // 4)
base = ctypes.addressof(ctypes.c_char.from_buffer(area))
for page in range(1, pages, 2):
    if libc.mprotect(ctypes.c_void_p(base + page * mmap.PAGESIZE), mmap.PAGESIZE, mmap.PROT_READ):
        raise SystemExit(f"mprotect: {os.strerror(ctypes.get_errno())}")
if sys.argv[3:] == ["advised"]:
    for page in range(pages):
        for advice in (mmap.MADV_RANDOM, mmap.MADV_DONTDUMP, mmap.MADV_HUGEPAGE):
            area.madvise(advice, page * mmap.PAGESIZE, mmap.PAGESIZE)
n, pid, page = 0, os.getpid(), 0
while True:
    for _ in range(64):
        at = page * mmap.PAGESIZE
        if area[at:at + mmap.PAGESIZE] != page.to_bytes(4, "little") * (mmap.PAGESIZE // 4):
            out.write(f"BAD page {page}: holds {int.from_bytes(area[at:at + 4], 'little')}\n")
        page = (page + 1) % pages
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
