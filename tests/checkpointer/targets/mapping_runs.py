"""A process with four private anonymous mappings that follow one another in its memory
map, for tests of scans that cover several mappings at once: `mapping_runs.py`.
Regions of PAGES pages each: 0 (rw-), 1 (rwx) and 2 (rw-) touch (three mappings: their
protections differ), then a one-page hole and region 3 (rw-). Each page holds
its region number * 1000 + its page number in its first 8 bytes. Prints the regions'
addresses (hex, one line), then answers "done" to each line on stdin: "REGION PAGE VALUE"
writes VALUE into that page; "remap REGION ADD" maps fresh memory over the region
(MAP_FIXED: a new mapping at the same place, same protection) and numbers it again, plus ADD;
"remap REGION -" maps fresh memory there and leaves it untouched (zeros, no page in)."""
import ctypes
import mmap
import sys

PAGES = 8
P = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FIXED = 0x10
RW, RWX = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS

base = libc.mmap(None, (4 * PAGES + 1) * P, RW, FLAGS, -1, 0)
starts = [base, base + PAGES * P, base + 2 * PAGES * P, base + (3 * PAGES + 1) * P]
protections = [RW, RWX, RW, RW]
assert libc.mprotect(starts[1], PAGES * P, RWX) == 0
assert libc.munmap(starts[3] - P, P) == 0


def number(region: int, add: int) -> None:
    for page in range(PAGES):
        ctypes.c_uint64.from_address(starts[region] + page * P).value = region * 1000 + page + add


for region in range(4):
    number(region, 0)
print(" ".join(hex(start) for start in starts), flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "remap":
        region = int(words[1])
        if libc.mmap(starts[region], PAGES * P, protections[region], FLAGS | MAP_FIXED, -1, 0) != starts[region]:
            sys.exit(f"mmap: {ctypes.get_errno()}")
        if words[2] != "-":
            number(region, int(words[2]))
    else:
        region, page, value = map(int, words)
        ctypes.c_uint64.from_address(starts[region] + page * P).value = value
    print("done", flush=True)
