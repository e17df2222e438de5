"""A TCP server keeping a count of its connections in memory (a target).

Listens on 127.0.0.1:PORT (argv[1]); each connection is answered with one line: the
server's PID namespace (so copies restored in their own namespaces tell themselves apart)
and how many connections it has answered, this one included. Writes `ready` once listening."""
import os
import socket
import sys

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(64)
with open("ready", "w") as f:
    f.write("ready")
answered = 0
while True:
    conn, _ = server.accept()
    answered += 1
    with conn:
        conn.sendall(f"{os.readlink('/proc/self/ns/pid')} {answered}\n".encode())
