"""Two adjacent private writable mappings, written at their border on demand:
`border_writer.py`. It maps 4 anonymous pages read-write and makes the last two
read-write-execute (two VMAs, side by side), prints the address of the first page, then for
each number N read from stdin fills the last page of the first mapping and the first page
of the second with the byte N, and prints N."""
import ctypes
import mmap
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE
RW = mmap.PROT_READ | mmap.PROT_WRITE
base = libc.mmap(None, 4 * PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
if base in (None, ctypes.c_void_p(-1).value) or libc.mprotect(base + 2 * PAGE, 2 * PAGE, RW | mmap.PROT_EXEC):
    sys.exit(f"BAD mmap/mprotect: errno {ctypes.get_errno()}")
print(base, flush=True)
for line in sys.stdin:
    value = int(line)
    ctypes.memset(base + PAGE, value, 2 * PAGE)
    print(value, flush=True)
