"""UDP sockets shut down (zdtm socket_udp_shutdown): `shut_down_udp.py OUTFILE`. Two
connected to each other, one shut down for sending (SHUT_WR), the other for receiving
(SHUT_RD), and an unconnected bound one shut down for sending (the kernel sets its mask
though it answers ENOTCONN). Every 5 ms: the receiving-shut one still sends to the other,
which receives it; the sending-shut ones fail to send (EPIPE); poll shows the receiving-
shut one's POLLRDHUP: "<n> <pid> ok", else a BAD line naming what differs."""
import errno
import os
import select
import socket
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
no_send, no_receive, unconnected = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
for sock in (no_send, no_receive, unconnected):
    sock.bind(("127.0.0.1", 0))
no_send.connect(no_receive.getsockname())
no_receive.connect(no_send.getsockname())
no_send.shutdown(socket.SHUT_WR)
no_receive.shutdown(socket.SHUT_RD)
try:
    unconnected.shutdown(socket.SHUT_WR)
except OSError as exc:
    assert exc.errno == errno.ENOTCONN


def send_fails(sock: socket.socket, *where) -> str:
    """'EPIPE' when sending fails so, else what happened."""
    try:
        sock.sendto(b"x", *where) if where else sock.send(b"x")
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "sent"


def arrives() -> bool:
    """Whether a datagram the receiving-shut socket sends arrives. Tried twice: one
    queued at a checkpoint is dropped by the restore (a documented simplification), so the
    restored loop may wait for a datagram that is gone."""
    for _ in range(2):
        no_receive.send(b"y")
        if select.select([no_send], [], [], 5)[0]:
            return no_send.recv(16) == b"y"
    return False


n, pid = 0, os.getpid()
while True:
    arrived = arrives()
    poller = select.poll()
    poller.register(no_receive, select.POLLIN | select.POLLRDHUP)
    hung_up = any(events & select.POLLRDHUP for _, events in poller.poll(0))
    checks = (arrived, send_fails(no_send), send_fails(unconnected, no_receive.getsockname()), hung_up)
    n += 1
    if checks == (True, "EPIPE", "EPIPE", True):
        out.write(f"{n:08d} {pid:7d} ok\n")
    else:
        out.write(f"BAD arrived, no_send's send, unconnected's send, POLLRDHUP: {checks}\n")
    time.sleep(0.005)
