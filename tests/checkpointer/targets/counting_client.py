"""A client of a TCP server outside the image: `counting_client.py PORT [OUTFILE]`. It
connects to 127.0.0.1:PORT and, for each line it reads, answers with that line and a
counter kept in its memory (incremented per answer): "<line> <count>\n". A restored
client whose connection is resumed answers the next line with the next count on the same
connection; one whose connection came back closed fails (ECONNRESET/EOF) and exits.

With OUTFILE, once the server has closed its side (EOF: the connection in CLOSE_WAIT), it
writes "EOF" there, waits for a file OUTFILE.go, reads again (EOF again, at once, if the
connection is still closed by the server) and answers "bye <count> eof", then exits."""
import os
import socket
import sys
import time

connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
count = 0
for line in connection.makefile("rb"):
    count += 1
    connection.sendall(line.rstrip(b"\n") + b" %d\n" % count)
if len(sys.argv) > 2:
    with open(sys.argv[2], "w") as out:
        out.write("EOF\n")
    while not os.path.exists(sys.argv[2] + ".go"):
        time.sleep(0.005)
    connection.sendall(b"bye %d %s\n" % (count, b"eof" if connection.recv(1) == b"" else b"bytes"))
