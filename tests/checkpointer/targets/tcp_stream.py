"""A loopback TCP connection between a parent and its child, checked end to end.

usage: tcp_stream.py OUTFILE. The child writes consecutive 8-byte counters as fast as the
connection takes them (it blocks when the buffers are full: bytes wait in both queues);
the parent reads them slowly and checks that each is the previous plus one, and answers
the highest it has read, which the child checks too. The parent appends "<start> <highest>
ok" to OUTFILE after each read ("<start> BAD ..." and exit on a gap, a repeat or an error),
so a lost, repeated or reordered byte in either direction shows. <start> is the process's
start time (/proc/PID/stat): a restored copy's differs from the original's, though its
PID is the same in its namespace.
"""
import os
import socket
import struct
import sys
import time



def me() -> str:
    """This process's start time: tells the original from a restored copy."""
    with open("/proc/self/stat") as stat:
        return "t" + stat.read().rpartition(")")[2].split()[19]


out = open(sys.argv[1], "a", buffering=1)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
if os.fork() == 0:
    conn = socket.create_connection(listener.getsockname())
    listener.close()
    counter, acknowledged = 0, 0
    while True:
        conn.sendall(b"".join(struct.pack("<Q", counter + i) for i in range(1, 1025)))
        counter += 1024
        conn.setblocking(False)
        try:
            answers = conn.recv(1 << 16)
        except BlockingIOError:
            answers = b""
        conn.setblocking(True)
        if len(answers) % 8 or answers == b"" and conn.fileno() < 0:
            os._exit(3)
        for (value,) in struct.iter_unpack("<Q", answers):
            if value < acknowledged or value > counter:
                os._exit(4)         # the parent sees the connection break and says BAD
            acknowledged = value
conn, _ = listener.accept()
listener.close()
expected, pending = 1, b""
while True:
    try:
        data = conn.recv(1 << 16)
    except OSError as exc:
        out.write(f"{me()} BAD {exc}\n")
        sys.exit(1)
    if not data:
        out.write(f"{me()} BAD end of stream after {expected - 1}\n")
        sys.exit(1)
    pending += data
    whole = len(pending) // 8 * 8
    for (value,) in struct.iter_unpack("<Q", pending[:whole]):
        if value != expected:
            out.write(f"{me()} BAD read {value}, expected {expected}\n")
            sys.exit(1)
        expected += 1
    pending = pending[whole:]
    conn.sendall(struct.pack("<Q", expected - 1))
    out.write(f"{me()} {expected - 1} ok\n")
    time.sleep(0.002)
