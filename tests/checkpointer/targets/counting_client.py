"""A client of a TCP server outside the image: `counting_client.py PORT`. It connects to
127.0.0.1:PORT and, for each line it reads, answers with that line and a counter kept in
its memory (incremented per answer): "<line> <count>\n". A restored client whose
connection is resumed answers the next line with the next count on the same connection;
one whose connection came back closed fails (ECONNRESET/EOF) and exits."""
import socket
import sys

connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
lines = connection.makefile("rb")
count = 0
for line in lines:
    count += 1
    connection.sendall(line.rstrip(b"\n") + b" %d\n" % count)
