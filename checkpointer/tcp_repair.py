"""TCP connections with both ends in the image, captured and made again with TCP_REPAIR.

What: `capture(socks)` reads the state of established TCP sockets borrowed from frozen
processes (sequence numbers, the bytes queued each way, the options agreed at the
handshake, window, timestamp clock, buffer sizes); `rebuild(sock, ...)` gives a fresh
socket that state: same addresses, same sequence numbers, same queued bytes, no
handshake; `finish(sock, ...)` lets it run (and sends what had not been sent yet).
Why: an application whose processes talk to each other over loopback TCP (a web server
and its database in one group) continues with its connections as they were, where a
connection to a peer outside the image can only come back closed (netsockets.py). This
is what CRIU does for established connections (its sk-tcp.c), from the kernel's repair
mode (Documentation/networking/tcp-repair, linux/tcp.h).

Simplifications: only the ESTABLISHED state (a connection half closed comes back closed,
as before); the caller repairs a connection only when its peer is in the same image (a
peer outside it was told of the close when the original died), and only when both ends
are established; urgent data and the congestion state are not kept (the kernel starts a
new slow start); bytes one end has sent that the other had received but not yet
acknowledged are sent again by the kernel after its retransmission timeout (a pause of
~200 ms on that connection, and rare); a connection whose ends kept moving bytes while
being read (three times) comes back closed; CAP_NET_ADMIN is needed (root): without it
connections come back closed.
"""
from __future__ import annotations

import fcntl
import socket
import struct
from typing import Callable

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_TIMESTAMP, TCP_REPAIR_WINDOW = 24, 29
REPAIR_ON, REPAIR_OFF, REPAIR_OFF_NO_WINDOW_PROBE = 1, 0, -1
NO_QUEUE, RECV_QUEUE, SEND_QUEUE = 0, 1, 2
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B
TCP_ESTABLISHED = 1
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
TCP_INFO_BYTES = 8      # tcpi_state ... tcpi_options, the window scales: the first bytes of tcp_info
WINDOW = struct.Struct("5I")  # struct tcp_repair_window: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup

BlobWriter = Callable[[bytes], list[str]]


def established(sock: socket.socket) -> bool:
    """Whether a TCP socket is in the ESTABLISHED state (the only one repaired)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)[0] == TCP_ESTABLISHED


def capture(pairs: list[tuple[socket.socket, socket.socket]], put_blob: BlobWriter) -> list[tuple[dict, dict] | None]:
    """The repair states of the two ends of each connection (None: the connection could
    not be read consistently), read in repair mode, which they then leave without a window
    probe and with their own SO_REUSEADDR back (repair mode overrides it), as if nothing
    had happened. Their processes are frozen, but the kernel may still move bytes between
    the two reads of a pair: a pair is read again when one end's state holds bytes as
    acknowledged that the other end's state has not received. Raises OSError (EPERM
    without CAP_NET_ADMIN)."""
    entered: list[tuple[socket.socket, int]] = []
    try:
        for sock in (sock for pair in pairs for sock in pair):
            reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_ON)
            entered.append((sock, reuse))
        states = [_read_consistent(pair) for pair in pairs]
    finally:
        for sock, reuse in entered:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_OFF_NO_WINDOW_PROBE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
    return [None if pair is None else (_stored(pair[0], put_blob), _stored(pair[1], put_blob)) for pair in states]


def _read_consistent(pair: tuple[socket.socket, socket.socket], attempts: int = 3) -> tuple[dict, dict] | None:
    for _ in range(attempts):
        first, second = _read(pair[0]), _read(pair[1])
        if _holds_what_was_acknowledged(first, second) and _holds_what_was_acknowledged(second, first):
            return first, second
    return None


def _holds_what_was_acknowledged(sender: dict, receiver: dict) -> bool:
    """Whether `receiver` has received every byte `sender` counts as acknowledged (the
    start of its send queue), modulo 2**32."""
    acknowledged = (sender["send_seq"] - len(sender["send"])) & 0xFFFFFFFF
    return (receiver["recv_seq"] - acknowledged) & 0xFFFFFFFF < 1 << 31


def _stored(state: dict, put_blob: BlobWriter) -> dict:
    """A state with its queues as blobs (and their lengths)."""
    return {**state, "recv": put_blob(state["recv"]), "send": put_blob(state["send"]),
            "recv_bytes": len(state["recv"]), "send_bytes": len(state["send"])}


def _read(sock: socket.socket) -> dict:
    state = {"unsent": _ioctl(sock, SIOCOUTQNSD)}
    for name, queue, length in (("recv", RECV_QUEUE, SIOCINQ), ("send", SEND_QUEUE, SIOCOUTQ)):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        state[f"{name}_seq"], state[name] = _queue(sock, length)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
    state.update(options=info[5], snd_wscale=info[6] & 0xF, rcv_wscale=info[6] >> 4,
                 mss=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
                 timestamp=sock.getsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP) & 0xFFFFFFFF,
                 window=list(WINDOW.unpack(sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, WINDOW.size))),
                 sndbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                 rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return state


def _queue(sock: socket.socket, length_request: int, attempts: int = 3) -> tuple[int, bytes]:
    """(sequence number after the last byte, the bytes) of the selected queue, read
    again if the kernel changed it meanwhile (a peek: in repair mode even the send
    queue)."""
    for _ in range(attempts):
        seq, size = _seq(sock), _ioctl(sock, length_request)
        data = sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT | socket.MSG_WAITALL) if size else b""
        if len(data) == size and (seq, size) == (_seq(sock), _ioctl(sock, length_request)):
            return seq, data
    raise OSError("its queue kept changing while it was read")


def _seq(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF


def rebuild(sock: socket.socket, state: dict, local: tuple, peer: tuple, read_blob: Callable[[list[str]], bytes]
            ) -> None:
    """Make a fresh TCP socket the connection `local` -> `peer` of `state`, left in repair
    mode (`finish` ends it, once every socket of the restore is made: a packet to a peer
    not made yet would be answered with a reset). Raises OSError (the address pair is in
    use: the original still runs)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_ON)
    _make_room(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, state["recv_bytes"], state["rcvbuf"])
    _make_room(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, state["send_bytes"], state["sndbuf"])
    sock.bind(local)
    for name, queue in (("recv", RECV_QUEUE), ("send", SEND_QUEUE)):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        start = (state[f"{name}_seq"] - state[f"{name}_bytes"]) & 0xFFFFFFFF
        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, struct.pack("I", start))
    sock.connect(peer)                  # in repair mode: established at once, no handshake
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, _options(state))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, struct.pack("I", state["timestamp"]))
    received, queued = read_blob(state["recv"]), read_blob(state["send"])
    sent = len(queued) - state["unsent"]
    for queue, data in ((RECV_QUEUE, received), (SEND_QUEUE, queued[:sent])):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        if data:
            sock.sendall(data)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, WINDOW.pack(*state["window"]))


def finish(sock: socket.socket, state: dict, reuse_address: int, read_blob: Callable[[list[str]], bytes]) -> None:
    """Leave repair mode with a window probe (the peer's answer tells this end what it
    has received) and send the bytes the application had written that the kernel had not
    sent yet; `reuse_address`: the application's SO_REUSEADDR (repair mode overrode it)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_OFF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse_address)
    if state["unsent"]:
        unsent = read_blob(state["send"])[-state["unsent"]:]
        sock.setblocking(False)
        try:
            done = sock.send(unsent)
        finally:
            sock.setblocking(True)
        if done != len(unsent):
            raise OSError(f"only {done} of the {len(unsent)} unsent bytes fit the send buffer")


def _make_room(sock: socket.socket, option: int, forced: int, queued: int, recorded: int) -> None:
    """A buffer that holds `queued` bytes (and the kernel's overhead on them): the size
    the original had grown to, when a fresh socket's is too small (autotuning stops)."""
    if queued and sock.getsockopt(socket.SOL_SOCKET, option) < 2 * queued:
        sock.setsockopt(socket.SOL_SOCKET, forced, max(recorded, 2 * queued) // 2)   # the kernel doubles it


def _options(state: dict) -> bytes:
    """TCP_REPAIR_OPTIONS: what the handshake had agreed (struct tcp_repair_opt each)."""
    options = [(TCPOPT_MSS, state["mss"])]
    if state["options"] & TCPI_OPT_SACK:
        options.append((TCPOPT_SACK_PERM, 0))
    if state["options"] & TCPI_OPT_WSCALE:
        options.append((TCPOPT_WINDOW, state["snd_wscale"] | state["rcv_wscale"] << 16))
    if state["options"] & TCPI_OPT_TIMESTAMPS:
        options.append((TCPOPT_TIMESTAMP, 0))
    return b"".join(struct.pack("II", code, value) for code, value in options)


def _ioctl(sock: socket.socket, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]
