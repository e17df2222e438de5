"""A process with a mapping of a socket (a packet socket's receive ring; TCP zero-copy
receive maps a socket as well) and no fd of it left: `socket_mapping.py OUTFILE`. Writes
"<n> <pid> ok" every 5 ms."""
import ctypes
import mmap
import os
import socket
import struct
import sys
import time

SOL_PACKET, PACKET_RX_RING = 263, 5
ring = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
ring.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("IIII", 4096, 1, 2048, 2))  # tpacket_req
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
if libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, ring.fileno(), 0) in (None, 2**64 - 1):
    raise SystemExit(f"mmap: {os.strerror(ctypes.get_errno())}")
ring.close()                # (Python's mmap would keep a duplicate of the fd)
out = open(sys.argv[1], "w", buffering=1)
n, pid = 0, os.getpid()
while True:
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
