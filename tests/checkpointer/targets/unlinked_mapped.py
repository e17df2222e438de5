"""Unlinked files both open and mapped, by a parent and its child:
`unlinked_mapped.py OUTFILE`, run in a scratch directory.

The parent makes scratch.bin and held.bin (two pages of "x" each), maps the first page of
scratch.bin MAP_PRIVATE read-only (held.bin it does not map), keeps both fds, unlinks both
and forks; the child maps both files' two pages MAP_SHARED and closes every fd of them, so
it holds them by its mappings only. The parent writes "ready", then waits for a file
"read-now" (removes it): it writes "a" through its fd of scratch.bin at offset 0, which its
private mapping must show (a page of a private mapping not written to is the file's page),
then makes "child-now", upon which the child writes "child" through its mappings at the
second page of each file, which the parent must read through its fds: one file each, not
copies. Then "read ok", or "BAD ..."."""
import ctypes
import os
import sys
import time

PAGE = 4096
PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE = 1, 2, 1, 2
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
out = open(sys.argv[1], "w", buffering=1)


def wait_for(name: str) -> None:
    while not os.path.exists(name):
        time.sleep(0.005)


fds = []
for name in ("scratch.bin", "held.bin"):
    fds.append(os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    os.pwrite(fds[-1], b"x" * 2 * PAGE, 0)
    os.unlink(name)
fd = fds[0]
private = libc.mmap(None, PAGE, PROT_READ, MAP_PRIVATE, fd, 0)
if os.fork() == 0:
    shared = [libc.mmap(None, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0) for f in fds]
    for f in fds:
        os.close(f)
    out.close()
    wait_for("child-now")
    for mapping in shared:
        ctypes.memmove(mapping + PAGE, b"child", 5)
    time.sleep(600)
    sys.exit(0)
out.write("ready\n")
wait_for("read-now")
os.unlink("read-now")
os.pwrite(fd, b"a", 0)
seen = ctypes.string_at(private, 1)
if seen != b"a":
    out.write(f"BAD the private mapping shows {seen!r} after a write through the fd\n")
    sys.exit(1)
open("child-now", "w").close()
deadline = time.monotonic() + 30
while any(os.pread(f, 5, PAGE) != b"child" for f in fds):
    if time.monotonic() > deadline:
        seen = [os.pread(f, 5, PAGE) for f in fds]
        out.write(f"BAD the fds read {seen!r} where the child wrote through its mappings\n")
        sys.exit(1)
    time.sleep(0.005)
out.write("read ok\n")
time.sleep(600)
