"""Maps, on demand, fresh private anonymous memory with madvise advice, for tests of the
VmFlags a checkpoint records: `advise_on_demand.py`. Answers each line on stdin
"map PAGES ADVICE" (ADVICE: a number for madvise, e.g. 16 MADV_DONTDUMP, 18
MADV_WIPEONFORK) with the new mapping's address in hex, after touching its pages;
"replace PAGES ADVICE ADDRESS" does the same, then unmaps the mapping of PAGES at ADDRESS
(hex): the process's size is as it was."""
import ctypes
import mmap
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
print("ready", flush=True)
for line in sys.stdin:
    _, pages, advice, *old = line.split()
    size = int(pages) * mmap.PAGESIZE
    addr = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if libc.madvise(addr, size, int(advice)) != 0:
        sys.exit(f"madvise: {ctypes.get_errno()}")
    for at in range(0, size, mmap.PAGESIZE):
        ctypes.c_uint64.from_address(addr + at).value = at + 1
    if old and libc.munmap(int(old[0], 16), size) != 0:
        sys.exit(f"munmap: {ctypes.get_errno()}")
    print(hex(addr), flush=True)
