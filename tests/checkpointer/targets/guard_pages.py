"""Guard pages (madvise MADV_GUARD_INSTALL, Linux 6.13): `guard_pages.py OUTFILE GOFILE
private|shared` maps 16 written pages (private or shared anonymous memory), prints
"mapped", and once GOFILE exists turns two of them into guard pages (a touch there
faults) and prints "guarded"; then it sleeps."""
import ctypes
import mmap
import os
import sys
import time

MADV_GUARD_INSTALL = 102
out = open(sys.argv[1], "w", buffering=1)
libc = ctypes.CDLL(None, use_errno=True)
memory = mmap.mmap(-1, 16 * mmap.PAGESIZE, flags=(mmap.MAP_PRIVATE if sys.argv[3] == "private" else mmap.MAP_SHARED)
                   | mmap.MAP_ANONYMOUS)
for page in range(16):
    memory[page * mmap.PAGESIZE] = 1
out.write("mapped\n")
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
if libc.madvise(ctypes.c_void_p(address + 2 * mmap.PAGESIZE), 2 * mmap.PAGESIZE, MADV_GUARD_INSTALL):
    out.write(f"BAD madvise: {os.strerror(ctypes.get_errno())}\n")
out.write("guarded\n")
time.sleep(600)
