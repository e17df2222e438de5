"""A process holding a high-numbered fd (a server that raised its file limit and has
thousands of connections): `high_fd.py OUTFILE FD`. Raises RLIMIT_NOFILE's soft limit to
the hard one and keeps /dev/null at fd FD. Every 5 ms: "<n> <pid> ok", or a BAD line if
that fd no longer reads as /dev/null."""
import os
import resource
import sys
import time

_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
high = int(sys.argv[2])
os.dup2(os.open("/dev/null", os.O_RDONLY), high)
out = open(sys.argv[1], "w", buffering=1)
n, pid = 0, os.getpid()
while True:
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n" if os.readlink(f"/proc/self/fd/{high}") == "/dev/null"
              else f"BAD fd {high}\n")
    time.sleep(0.005)
