"""A process that is not root checks the credentials of its own socketpair.

usage: peer_creds.py OUTFILE. It sets its uid and gid to 65534 (nobody), makes a socketpair,
and every 20 ms reads SO_PEERCRED of both ends, which name the pair's maker (itself: its
pid, uid and gid), and sends a byte through it; it appends "<count> ok" to OUTFILE, or
"BAD <what it read>" and exits, so a restore that made the pair as another user shows.
"""
import os
import socket
import struct
import sys
import time

out = open(sys.argv[1], "a", buffering=1)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
ends = socket.socketpair()
count = 0
while True:
    for end in ends:
        creds = struct.unpack("3i", end.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if creds != (os.getpid(), os.getuid(), os.getgid()):
            out.write(f"BAD {creds} for {(os.getpid(), os.getuid(), os.getgid())}\n")
            sys.exit(1)
    ends[0].send(b"x")
    assert ends[1].recv(1) == b"x"
    count += 1
    out.write(f"{count} ok\n")
    time.sleep(0.02)
