"""A client of a TCP server outside the image that has closed its side of the connection
with bytes still queued: `half_closed_client.py PORT OUTFILE`. It connects to
127.0.0.1:PORT, sends a pattern (bytes i % 251) until the socket takes no more (the
server does not read yet), writes "sent N" to OUTFILE, shuts its side down (its FIN
queued behind those bytes: FIN_WAIT1), then reads lines and writes "<line> <count>" for
each (the count kept in its memory), and "EOF" at the end."""
import socket
import sys

PATTERN = bytes(i % 251 for i in range(251 * 64))
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
out = open(sys.argv[2], "w", buffering=1)
connection.setblocking(False)
sent = 0
try:
    while True:
        offset = sent % 251
        sent += connection.send(PATTERN[offset:offset + 251 * 60])
except BlockingIOError:
    pass
connection.setblocking(True)
out.write(f"sent {sent}\n")
connection.shutdown(socket.SHUT_WR)
count = 0
for line in connection.makefile("rb"):
    count += 1
    out.write(f"{line.decode().rstrip()} {count}\n")
out.write("EOF\n")
