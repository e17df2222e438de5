"""Two TCP listeners on one port, bound with SO_REUSEPORT, then the first turned it off
(zdtm socket-tcp-reuseport; a server handing its port over to a new instance does this):
`reuseport_pair.py OUTFILE`. It writes "ready PORT", then waits for a file "read-now"
(removes it): both still listen on that port, SO_REUSEPORT off on the first and on on
the second, and a client connecting there is accepted by one of them. Then "read ok", or
"BAD ..."."""
import os
import select
import socket
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
listeners = []
port = 0
for _ in range(2):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    port = listener.getsockname()[1]
    listeners.append(listener)
listeners[0].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
out.write(f"ready {port}\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
flags = [s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in listeners]
if flags != [0, 1] or [s.getsockname()[1] for s in listeners] != [port, port]:
    out.write(f"BAD reuseport {flags}, names {[s.getsockname() for s in listeners]}\n")
    sys.exit(1)
with socket.create_connection(("127.0.0.1", port), timeout=5):
    ready, _, _ = select.select(listeners, [], [], 5)
    if not ready:
        out.write("BAD no listener got the connection\n")
        sys.exit(1)
    ready[0].accept()[0].close()
out.write("read ok\n")
time.sleep(600)
