"""A Unix server whose socket file was removed with its directory while it runs (a
temporary directory cleaned up under it; zdtm sk-unix01), with a client connected before:
`unlinked_listener.py OUTFILE`, run in a scratch directory. A second listener is bound to
a name whose file was unlinked and then taken by a third socket (bound there since).
It writes "ready", then waits for a file "read-now" (removes it): the listeners still name
their paths (getsockname), the removed directory and the first name are still gone, the
third socket's file is still there, and the client's connection still carries bytes both
ways. Then "read ok", or "BAD ..."."""
import os
import socket
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
os.makedirs("run.d")
listener = socket.socket(socket.AF_UNIX)
listener.bind(os.path.abspath("run.d/server.sock"))
listener.listen(4)
client = socket.socket(socket.AF_UNIX)
client.connect(os.path.abspath("run.d/server.sock"))
served, _ = listener.accept()
os.unlink("run.d/server.sock")
os.rmdir("run.d")
shadowed = socket.socket(socket.AF_UNIX)
shadowed.bind("shared.sock")            # relative, from the working directory
shadowed.listen(4)
os.unlink("shared.sock")
holder = socket.socket(socket.AF_UNIX)
holder.bind("shared.sock")
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
names = (listener.getsockname(), shadowed.getsockname(), holder.getsockname())
if names != (os.path.abspath("run.d/server.sock"), "shared.sock", "shared.sock"):
    out.write(f"BAD names {names}\n")
    sys.exit(1)
if os.path.exists("run.d") or not os.path.exists("shared.sock"):
    out.write(f"BAD the files: run.d {os.path.exists('run.d')}, shared.sock {os.path.exists('shared.sock')}\n")
    sys.exit(1)
client.sendall(b"ping")
served.sendall(b"pong")
if served.recv(4) != b"ping" or client.recv(4) != b"pong":
    out.write("BAD the connection\n")
    sys.exit(1)
out.write("read ok\n")
time.sleep(600)
