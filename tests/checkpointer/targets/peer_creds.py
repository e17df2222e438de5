"""A process that is not root checks the credentials of a socketpair it holds.

usage: peer_creds.py OUTFILE [child]. It sets its uid and gid to 65534 (nobody) and makes a
socketpair; with `child`, its child does that instead, sends both ends to it (SCM_RIGHTS)
and exits, reaped (zdtm sock_peercred). Every 20 ms it reads SO_PEERCRED of both ends,
which name the pair's maker (its pid, though no process has the child's any more, 65534,
65534), and sends a byte through it; it appends "<count> ok" to OUTFILE, or "BAD <what it
read>" and exits, so a restore that made the pair as another user or process shows.
"""
import os
import socket
import struct
import sys
import time


def become_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def made_by_a_child() -> tuple[list[socket.socket], int]:
    """Both ends of a socketpair made by a child of ours as nobody, and its pid; it has exited."""
    parent_end, child_end = socket.socketpair()
    child = os.fork()
    if child == 0:
        become_nobody()
        made = socket.socketpair()
        socket.send_fds(child_end, [b"x"], [made[0].fileno(), made[1].fileno()])
        os._exit(0)
    _, fds, _, _ = socket.recv_fds(parent_end, 1, 2)
    os.waitpid(child, 0)
    parent_end.close()
    child_end.close()
    return [socket.socket(fileno=fd) for fd in fds], child


out = open(sys.argv[1], "a", buffering=1)
if sys.argv[2:] == ["child"]:
    ends, maker = made_by_a_child()
    become_nobody()
else:
    become_nobody()
    ends, maker = list(socket.socketpair()), os.getpid()
count = 0
while True:
    for end in ends:
        creds = struct.unpack("3i", end.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if creds != (maker, 65534, 65534):
            out.write(f"BAD {creds} for {(maker, 65534, 65534)}\n")
            sys.exit(1)
    ends[0].send(b"x")
    assert ends[1].recv(1) == b"x"
    count += 1
    out.write(f"{count} ok\n")
    time.sleep(0.02)
