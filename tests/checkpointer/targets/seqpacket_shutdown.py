"""Seqpacket socket pairs whose receiving side is shut down (zdtm sockets01-seqpacket):
`seqpacket_shutdown.py OUTFILE`: in pair A one end shut its reading down (SHUT_RD); in pair
B one end sent "last words" and then shut its writing down, so the other end holds that
message and then the end of file. Every 5 ms: "<n> <pid> ok"; when OUTFILE's directory
holds "read-now" (removed), reads B: "read ok" if it gets the message then the end of
file, else a BAD line."""
import os
import socket
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
read_now = os.path.join(os.path.dirname(sys.argv[1]), "read-now")
a = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
a[0].shutdown(socket.SHUT_RD)
b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
b[1].send(b"last words")
b[1].shutdown(socket.SHUT_WR)
n, pid = 0, os.getpid()
while True:
    if os.path.exists(read_now):
        os.unlink(read_now)
        got = [b[0].recv(64), b[0].recv(64)]
        out.write("read ok\n" if got == [b"last words", b""] else f"BAD read {got}\n")
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
