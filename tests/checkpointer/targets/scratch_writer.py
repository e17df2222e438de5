"""A process keeping scratch files in a temporary directory, as a compiler does:
`scratch_writer.py OUTFILE DIR`. It creates DIR/work/scratch (mode 0640), keeps it open
read-write and appends a numbered line to it every 5 ms through that fd, checking first
(pread) that the file holds exactly the lines its memory says it wrote; it also holds
DIR/big (2 MiB, too big for an image to keep) open. It appends "<n> <pid> ok" to
OUTFILE after each step ("BAD ..." and exit on a mismatch)."""
import os
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
work = os.path.join(sys.argv[2], "work")
os.mkdir(work)
scratch = os.open(os.path.join(work, "scratch"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
big = os.open(os.path.join(sys.argv[2], "big"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(big, bytes(2 << 20))
written, n = b"", 0
while True:
    held = os.pread(scratch, len(written) + 1, 0)
    if held != written:
        out.write(f"BAD the scratch file holds {len(held)} bytes, {len(written)} were written\n")
        sys.exit(1)
    n += 1
    line = f"line {n}\n".encode()
    os.write(scratch, line)
    written += line
    out.write(f"{n:08d} {os.getpid():7d} ok\n")
    time.sleep(0.005)
