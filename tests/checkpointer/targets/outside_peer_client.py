"""A client of a Unix stream server outside the image, with the server's reply queued to
it and not read yet at the checkpoint (a command waiting on a daemon's answer):
`outside_peer_client.py OUTFILE SOCKET`, run in a scratch directory.

It connects, sends "request", writes "ready", then waits for a file "read-now" (removes
it): it must read the reply the server had sent ("reply" and the server's words), then
EOF (the server is not restored: it ended the connection), and writing must fail with
EPIPE. Then "read ok", or "BAD ..."."""
import os
import signal
import socket
import sys
import time

signal.signal(signal.SIGPIPE, signal.SIG_IGN)
out = open(sys.argv[1], "w", buffering=1)
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(sys.argv[2])
client.sendall(b"request\n")
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
client.settimeout(30)
got = b""
while chunk := client.recv(4096):
    got += chunk
if not got.startswith(b"reply "):
    out.write(f"BAD read {got!r} before EOF, not the server's reply\n")
    sys.exit(1)
try:
    client.send(b"x")
    out.write("BAD the connection could be written to after EOF\n")
    sys.exit(1)
except (BrokenPipeError, ConnectionResetError):
    pass
out.write(f"got {got.decode().strip()}\nread ok\n")
