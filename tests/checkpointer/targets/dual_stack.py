"""A dual-stack server and its IPv4 client in one process: `dual_stack.py OUTFILE`: an IPv6
listener on [::] (IPV6_V6ONLY off) accepts a connection from an IPv4 socket to 127.0.0.1,
so the server's end is an inet6 socket with the mapped address ::ffff:127.0.0.1. Every
5 ms the client sends a counter and reads it back, echoed: "<n> <pid> ok", BAD if not."""
import os
import socket
import struct
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
listener.bind(("::", 0))
listener.listen(1)
client = socket.create_connection(("127.0.0.1", listener.getsockname()[1]))
server, _ = listener.accept()
n, pid = 0, os.getpid()
while True:
    n += 1
    try:
        client.sendall(struct.pack("Q", n))
        server.sendall(server.recv(8, socket.MSG_WAITALL))
        echoed = struct.unpack("Q", client.recv(8, socket.MSG_WAITALL))[0]
        out.write(f"{n:08d} {pid:7d} ok\n" if echoed == n else f"BAD echoed {echoed}, not {n}\n")
    except OSError as exc:
        out.write(f"BAD {exc}\n")
        time.sleep(1)
    time.sleep(0.005)
