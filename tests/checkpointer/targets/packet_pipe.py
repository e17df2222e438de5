"""A packet-mode pipe (pipe2 with O_DIRECT, as stress-ng's pipe stressor makes) holding
packets: `packet_pipe.py OUTFILE`. Every 5 ms: "<n> <pid> ok"; when OUTFILE's directory
holds "read-now" (removed), reads with a buffer larger than any packet, which returns one
packet per read, then writes and reads one more through its write end: "read ok" if
every read got exactly the packet written, else a BAD line."""
import os
import sys
import time

PACKETS = [bytes([i]) * length for i, length in enumerate((1, 100, 512, 4096, 3, 700), start=1)]

out = open(sys.argv[1], "w", buffering=1)
read_now = os.path.join(os.path.dirname(sys.argv[1]), "read-now")
reader, writer = os.pipe2(os.O_DIRECT)
os.set_blocking(reader, False)      # a lost packet is a BAD line, not a hang
for packet in PACKETS:
    os.write(writer, packet)


def read_one() -> bytes:
    try:
        return os.read(reader, 65536)
    except BlockingIOError:
        return b""


n, pid = 0, os.getpid()
while True:
    if os.path.exists(read_now):
        os.unlink(read_now)
        got = [read_one() for _ in PACKETS]
        os.write(writer, b"after")
        os.write(writer, b"more")
        got += [read_one(), read_one()]
        wanted = PACKETS + [b"after", b"more"]
        out.write("read ok\n" if got == wanted else f"BAD read lengths {[len(g) for g in got]}\n")
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
