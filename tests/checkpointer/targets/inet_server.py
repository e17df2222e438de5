"""A small server with in-memory state: `inet_server.py OUTFILE UNIXPATH`. It listens on
TCP 127.0.0.1 (SO_REUSEADDR, backlog 7, non-blocking), TCP [::] (IPV6_V6ONLY), a UDP
port on 127.0.0.1 and a Unix stream socket at UNIXPATH, writes "ready <tcp4> <tcp6>
<udp>" to OUTFILE (tcp6 0: no IPv6 here), then answers every line (or datagram) with "<n> <pid>", n counting
requests served so far (the state a restore must keep). A connection that ends (EOF or
reset) is logged as "ended <how>" and closed; the server carries on."""
import os
import selectors
import socket
import sys

out = open(sys.argv[1], "w", buffering=1)
tcp4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp4.bind(("127.0.0.1", 0))
tcp4.listen(7)
try:
    tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    tcp6.bind(("::", 0))
    tcp6.listen(5)
except OSError:  # a machine without IPv6: "ready" shows port 0
    tcp6 = None
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind(sys.argv[2])
unix.listen(3)
selector = selectors.DefaultSelector()
for listener in [s for s in (tcp4, tcp6, unix) if s]:
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, "listener")
selector.register(udp, selectors.EVENT_READ, "udp")
served = 0
out.write(f"ready {tcp4.getsockname()[1]} {tcp6.getsockname()[1] if tcp6 else 0} {udp.getsockname()[1]}\n")


def answer() -> bytes:
    global served
    served += 1
    return f"{served} {os.getpid()}\n".encode()


while True:
    for key, _ in selector.select():
        sock = key.fileobj
        if key.data == "listener":
            conn, _ = sock.accept()
            conn.setblocking(True)
            selector.register(conn, selectors.EVENT_READ, "conn")
        elif key.data == "udp":
            data, peer = sock.recvfrom(100)
            sock.sendto(answer(), peer)
        else:
            try:
                data = sock.recv(100)
                how = "eof" if not data else None
            except ConnectionResetError:
                how = "reset"
            if how:
                out.write(f"ended {how}\n")
                selector.unregister(sock)
                sock.close()
            else:
                sock.sendall(answer())
