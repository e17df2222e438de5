"""The TCP connections of a killing checkpoint, held until the restore takes them: a
stand-in for CRIU's network lock.

What: `keep(held)` hands the sockets that `checkpoint(..., kill=True)` held in repair mode
(tcp_repair.hold: our dups, their processes killed) to a holder process, this file run as
a script, which keeps them open, still in repair mode, until a restore `take`s them, for
at most `hold_s` (HOLD_S by default: `sls checkpoint --kill --hold SECONDS`); `take(record)` is the restore's side: the very socket of a connection
record, or None when no holder has it (the holder ended, or another host restores).
Why: a killed process's socket, closed in repair mode, is gone at once; a segment its
peer had sent before the kill and that arrives after it (an ACK of the last probe or
retransmission, delayed by a loaded machine's softirq work; data; a keepalive) finds no
socket and is answered with a reset, which ends the connection the restore was to resume
(traced: tcp_retransmit_skb of the FIN_WAIT1 end 22 ms before the kill, the peer's answer
handled by ksoftirqd 15 ms after it, tcp_send_reset reason NO_SOCKET). A held socket takes
such segments as the live one would: the peer's data lands in its receive queue
(acknowledged), its ACKs shorten its send queue; repair mode does not stop it sending
either (the zero-window probe timer sends what the peer's window lets through). So
the restore resumes the socket itself (file_restore.py: pushed into the restored process,
then out of repair mode with a window probe): what arrived meanwhile is read by the
application, nothing acknowledged is lost, and a half-closed connection's FIN states are
the kernel's own.
How: one abstract Unix socket per connection (its network namespace's), named by the
protocol version, the address pair and the sequence numbers at the checkpoint, so that a
restore of another image of the same address pair does not take it; a client of the
holder's uid (or root) connecting gets the socket (SCM_RIGHTS, docs/FORMAT.md "Held TCP
connections") and the holder forgets it; one its peer reset is dropped; the holder exits
once it holds none. After `hold_s` the rest are reset (out of repair mode, then closed with
a zero linger): the peer learns that the connection is gone, where a later restore from
the image alone could not give it the bytes the held socket acknowledged meanwhile (nor
match the sequence numbers of what it sent: such a connection then stalls).
This file imports only the standard library: the holder starts as a bare script, without
the package (its import costs ~0.2 s of CPU, seconds under load).
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

PROTOCOL = 1
HOLD_S = 3600.0         # how long a holder waits for the restore, by default
POLL_S = 1.0            # how often it looks for connections the peer reset
START_TIMEOUT_S = 60.0  # for the holder to bind its names (a loaded machine)
TAKE_TIMEOUT_S = 10.0
TCP_REPAIR, REPAIR_OFF_NO_WINDOW_PROBE = 19, -1     # as tcp_repair.py (not imported: see above)
TCP_CLOSE = 7


def name(record: dict) -> bytes:
    """The abstract address of the holder of connection `record` (a socket record whose
    `tcp` state was read by tcp_repair.hold)."""
    key = json.dumps([record["address"], record["peer"], record["tcp"]["send_seq"], record["tcp"]["recv_seq"]])
    return f"\0slsfs-held-tcp-{PROTOCOL}/{hashlib.sha256(key.encode()).hexdigest()[:32]}".encode()


def keep(held: list[tuple[socket.socket, dict]], hold_s: float | None = None) -> bool:
    """Give the held connections' sockets (our dups, in repair mode) to a new holder
    process, which resets the ones not taken within `hold_s` seconds (None: HOLD_S); the
    caller then closes its dups. False if the holder could not start (the connections
    then end at the caller's close, silently, as without a holder)."""
    if not held:
        return True
    spec = [[sock.fileno(), name(record).hex()] for sock, record in held]
    hold_for = repr(HOLD_S if hold_s is None else float(hold_s))
    try:
        starter = subprocess.run([sys.executable, "-I", "-S", __file__, json.dumps(spec), hold_for],
                                 pass_fds=[s for s, _ in spec], stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=START_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return starter.stdout == b"holding\n"


def take(record: dict) -> socket.socket | None:
    """The socket of connection `record` from its holder (still in repair mode), or None."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as client:
        try:
            client.connect(name(record))
        except OSError:         # ECONNREFUSED: no holder (any more)
            return None
        client.settimeout(TAKE_TIMEOUT_S)
        try:
            _, fds, _, _ = socket.recv_fds(client, 16, 1)
        except OSError:
            return None
    return socket.socket(fileno=fds[0]) if fds else None


def _serve(held: dict[socket.socket, socket.socket], deadline: float) -> None:
    """Until nothing is held or the deadline: hand each socket to the first client of our
    uid (or root) on its name; forget the ones their peer reset."""
    while held and time.monotonic() < deadline:
        ready, _, _ = select.select(list(held), [], [], min(POLL_S, max(deadline - time.monotonic(), 0)))
        for listener in ready:
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            with client:
                _, uid, _ = struct.unpack("3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                if uid not in (0, os.geteuid()):
                    continue
                try:
                    socket.send_fds(client, [b"held"], [held[listener].fileno()])
                except OSError:
                    continue
            held.pop(listener).close()
            listener.close()
        for listener in [lsn for lsn, sock in held.items() if _state(sock) == TCP_CLOSE]:
            held.pop(listener).close()
            listener.close()
    for listener, sock in held.items():
        listener.close()        # offered no more first: whoever sees the reset finds no holder
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_OFF_NO_WINDOW_PROBE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()            # a reset to the peer


def _state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def _main(spec: list[list], hold_s: float) -> None:
    """Bind every name, then go on in a detached child (reparented, in a session of its
    own) and tell the starter "holding" once all are bound."""
    held = {}
    for fd, address in spec:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(bytes.fromhex(address))
        listener.listen(4)
        held[listener] = socket.socket(fileno=fd)
    if os.fork():
        os.write(1, b"holding\n")
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    _serve(held, time.monotonic() + hold_s)


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]), float(sys.argv[2]))
