"""A UDP socket with a classic BPF filter that drops every datagram (SO_ATTACH_FILTER, "ret
#0"), beside one without: `filtered_socket.py OUTFILE`. Every 5 ms it sends a datagram to
each from a third socket: "<n> <pid> ok" when the plain one receives its datagram, the
filtered one none, and SO_GET_FILTER still shows one instruction; else a BAD line. (A
datagram queued when a checkpoint is taken is dropped by its restore, with a warning: the
plain one's is sent again after 0.5 s without it.)"""
import ctypes
import os
import select
import socket
import struct
import sys
import time

SO_ATTACH_FILTER = SO_GET_FILTER = 26
libc = ctypes.CDLL(None, use_errno=True)
out = open(sys.argv[1], "w", buffering=1)
filtered, plain, sender = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
drop_all = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))   # BPF_RET | BPF_K, 0
fprog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(drop_all))
filtered.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
for sock in (filtered, plain):
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)


def instructions() -> int:
    count = ctypes.c_uint(0)
    libc.getsockopt(filtered.fileno(), socket.SOL_SOCKET, SO_GET_FILTER, None, ctypes.byref(count))
    return count.value


n, pid = 0, os.getpid()
while True:
    sender.sendto(b"x", filtered.getsockname())
    sender.sendto(b"y", plain.getsockname())
    while not select.select([plain], [], [], 0.5)[0]:   # a datagram queued at a checkpoint is
        sender.sendto(b"y", plain.getsockname())         # dropped by the restore (a warning): again
    got_plain = plain.recv(16) == b"y"
    try:
        got_filtered = filtered.recv(16)
    except BlockingIOError:
        got_filtered = b""
    n += 1
    if got_plain and not got_filtered and instructions() == 1:
        out.write(f"{n:08d} {pid:7d} ok\n")
    else:
        out.write(f"BAD plain {got_plain}, filtered {got_filtered!r}, instructions {instructions()}\n")
    time.sleep(0.005)
