"""A process whose memory a test writes to, one page at a time: `page_poker.py MIB`.
It maps MIB MiB of private anonymous memory, writes each page's number into its first 8
bytes, prints the mapping's address (hex), then for each line "PAGE VALUE" on stdin
writes VALUE into the first 8 bytes of page PAGE and answers "done"."""
import ctypes
import mmap
import struct
import sys

size = int(sys.argv[1]) << 20
memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)     # fd -1: anonymous
for page in range(size // mmap.PAGESIZE):
    struct.pack_into("Q", memory, page * mmap.PAGESIZE, page)
print(hex(ctypes.addressof(ctypes.c_char.from_buffer(memory))), flush=True)
for line in sys.stdin:
    page, value = (int(word) for word in line.split())
    struct.pack_into("Q", memory, page * mmap.PAGESIZE, value)
    print("done", flush=True)
