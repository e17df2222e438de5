"""Unix datagram servers whose socket files are gone while their clients, connected
before, still send to them (zdtm sk-unix01, fifo_upon_unix_socket00): `unlinked_dgram_server.py
OUTFILE`, run in a scratch directory. One server's file was removed with its directory;
the other's name is a FIFO now. Each client has sent one datagram that waits, unread, in
its server's queue. It writes "ready", then waits for a file "read-now" (removes it): each
server reads the waiting datagram, then one its client sends now; the clients still name
their servers (getpeername). Then "read ok", or "BAD ..."."""
import os
import socket
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
os.makedirs("run.d")
pairs = []
for path in (os.path.abspath("run.d/server.sock"), os.path.abspath("fifo.sock")):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.connect(path)
    client.send(b"waiting")
    pairs.append((path, server, client))
os.unlink("run.d/server.sock")
os.rmdir("run.d")
os.unlink("fifo.sock")
os.mkfifo("fifo.sock")
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
for path, server, client in pairs:
    server.settimeout(5)
    try:
        peer = client.getpeername()
        client.send(b"now")
        got = [server.recv(16), server.recv(16)]
    except OSError as exc:
        out.write(f"BAD {path}: {exc}\n")
        sys.exit(1)
    if peer != path or got != [b"waiting", b"now"]:
        out.write(f"BAD {path}: peer {peer!r}, received {got}\n")
        sys.exit(1)
out.write("read ok\n")
time.sleep(600)
