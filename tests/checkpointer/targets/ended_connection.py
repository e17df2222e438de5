"""A process holding TCP connections that have ended (both sides shut down writing, the
FINs exchanged; one end left in TIME_WAIT by the kernel), as a client does between reading
a response to its end and closing the socket: `ended_connection.py OUTFILE`, run in a
scratch directory.

It writes "ready", then waits for a file "read-now" (removes it): each end must read EOF,
writing must fail with EPIPE, and each must name its own address (getsockname) and its
peer's (SO_PEERNAME, which still answers in state CLOSE, where getpeername does not) as
before. Then "read ok", or "BAD ..."."""
import os
import signal
import socket
import sys
import time

SO_PEERNAME = 28
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
out = open(sys.argv[1], "w", buffering=1)
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
listener.close()
client.shutdown(socket.SHUT_WR)       # the client closes first: its port ends in TIME_WAIT
assert server.recv(1) == b""
server.shutdown(socket.SHUT_WR)
assert client.recv(1) == b""
time.sleep(0.2)                        # the last ACK in: both ends CLOSE


def names(sock: socket.socket) -> tuple:
    return sock.getsockname(), sock.getsockopt(socket.SOL_SOCKET, SO_PEERNAME, 16)   # a struct sockaddr_in


before = [names(client), names(server)]
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
for name, end in (("client", client), ("server", server)):
    try:
        got = end.recv(1)
    except OSError as exc:
        got = exc
    if got != b"":
        out.write(f"BAD the {name} end reads {got!r}, not EOF\n")
        sys.exit(1)
    try:
        end.send(b"x")
        out.write(f"BAD the {name} end could write\n")
        sys.exit(1)
    except BrokenPipeError:
        pass
if [names(client), names(server)] != before:
    out.write(f"BAD the ends name {[names(client), names(server)]}, not {before}\n")
    sys.exit(1)
out.write("read ok\n")
time.sleep(600)
