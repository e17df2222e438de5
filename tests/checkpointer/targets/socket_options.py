"""Sockets with options that must survive: `socket_options.py OUTFILE`: an IPv6 UDP socket
with IP_FREEBIND bound to an address this host does not have (2001:db8::...) and another
bound so whose IP_FREEBIND was turned off after the bind (zdtm sk-freebind-false), a TCP
listener on 127.0.0.1 whose send and receive buffer sizes the program set (SO_BUF_LOCK
shows them locked), a corked TCP socket (TCP_CORK), and a connection to that listener (both
ends in the image: kept established) with TCP_NODELAY on one end and keepalive settings on
the other; SO_DONTROUTE on the corked socket, SO_NO_CHECK on the UDP one, SO_PASSSEC on
an unbound Unix socket (zdtm sock_opts00). Every 5 ms: "<n> <pid> ok" while
each option reads as it did at the start, else a BAD line naming it."""
import socket
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
IP_FREEBIND, SO_BUF_LOCK, SO_PASSSEC, SO_NO_CHECK = 15, 72, 34, 11
free = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
free.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
free.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
unix = socket.socket(socket.AF_UNIX)
unix.setsockopt(socket.SOL_SOCKET, SO_PASSSEC, 1)
free.bind(("2001:db8::ff00:42:8329", 0))
was_free = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
was_free.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
was_free.bind(("2001:db8::ff00:42:8329", 0))
was_free.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 0)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 50000)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 70000)
listener.bind(("127.0.0.1", 0))
listener.listen(4)
corked = socket.socket()
corked.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
corked.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
server.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
server.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
checks = {
    "IP_FREEBIND": lambda: free.getsockopt(socket.IPPROTO_IP, IP_FREEBIND),
    "address": lambda: free.getsockname()[:2],
    "IP_FREEBIND turned off": lambda: was_free.getsockopt(socket.IPPROTO_IP, IP_FREEBIND),
    "its address": lambda: was_free.getsockname()[:2],
    "SO_SNDBUF": lambda: listener.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
    "SO_RCVBUF": lambda: listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    "SO_BUF_LOCK": lambda: listener.getsockopt(socket.SOL_SOCKET, SO_BUF_LOCK),
    "TCP_CORK": lambda: corked.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK),
    "SO_DONTROUTE": lambda: corked.getsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE),
    "SO_NO_CHECK": lambda: free.getsockopt(socket.SOL_SOCKET, SO_NO_CHECK),
    "SO_PASSSEC": lambda: unix.getsockopt(socket.SOL_SOCKET, SO_PASSSEC),
    "TCP_NODELAY": lambda: client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
    "SO_KEEPALIVE": lambda: server.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "TCP_KEEPIDLE": lambda: server.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
}
expected = {name: check() for name, check in checks.items()}
out.write("ready\n")
n, pid = 0, __import__("os").getpid()
while True:
    now = {name: check() for name, check in checks.items()}
    n += 1
    changed = [f"{name} {now[name]} (was {expected[name]})" for name in checks if now[name] != expected[name]]
    out.write(f"BAD {', '.join(changed)}\n" if changed else f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
