"""A process whose memory a test writes to, one page at a time: `page_poker.py MIB`.
It maps MIB MiB of private anonymous memory, writes each page's number into its first 8
bytes, prints the mapping's address (hex), then answers "done" to each line on stdin:
"PAGE VALUE" writes VALUE into the first 8 bytes of page PAGE; "remap ADD" maps fresh
memory over the whole mapping (MAP_FIXED: a new mapping at the same place, with the same
protection) and writes each page's number plus ADD into it."""
import ctypes
import mmap
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
MAP_FIXED = 0x10
size = int(sys.argv[1]) << 20
memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)     # fd -1: anonymous
base = ctypes.addressof(ctypes.c_char.from_buffer(memory))


def number_pages(add: int) -> None:
    for page in range(size // mmap.PAGESIZE):
        struct.pack_into("Q", memory, page * mmap.PAGESIZE, page + add)


number_pages(0)
print(hex(base), flush=True)
for line in sys.stdin:
    command, value = line.split()
    if command == "remap":
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED
        if libc.mmap(base, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0) != base:
            sys.exit(f"mmap: {ctypes.get_errno()}")
        number_pages(int(value))
    else:
        struct.pack_into("Q", memory, int(command) * mmap.PAGESIZE, int(value))
    print("done", flush=True)
