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

A connection whose peer is outside the image is captured only by a checkpoint that kills
its processes (`hold`: left in repair mode, so that it never sends a FIN or a reset, and
kept open after the kill by tcp_hold.py until the restore resumes it; the peer, which
runs on, keeps its end).

Half-closed connections (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING) are remade
ESTABLISHED, then shut down again (this end's FIN) and sent a FIN forged in the peer's
name (the peer's, which it will not send again: tcp_fin.py), as CRIU does.

Simplifications: TIME_WAIT and the other states are not repaired (a process holds no
socket in TIME_WAIT); the caller repairs a connection only when its peer is in the same image or is
held (a peer outside it was told of the close when the original died), and only when both
ends are established; a held connection's socket is kept until the restore by
tcp_hold.py, not by a network lock (CRIU drops the peer's segments with iptables); urgent data and the congestion state are not kept (the kernel starts a
new slow start); bytes one end has sent that the other had received but not yet
acknowledged are sent again by the kernel after its retransmission timeout (a pause of
~200 ms on that connection, and rare); a connection whose ends kept moving bytes while
being read (PAIR_READS times, within READ_BUDGET_S for all of a checkpoint's connections)
comes back closed, with the reason in its record (`closed_because`, which the restore's
warning names); CAP_NET_ADMIN is needed (root): without it connections come back closed.
The ends are made (`rebuild`) process by process with what they had received, and given
what they had sent (`load_sent`) only when all are made, just before they leave repair mode
(`finish`). A restored end's buffers are the original's sizes, fixed (no
more autotuning), or larger if its queued bytes need it; its segments are at most 32767
bytes (loopback's were up to 65483). The ends a killed original left closing on the same
address pairs are destroyed first (`clear_leftovers`); an end whose other end could not be
made again comes back reset (`abandon`); a connection that had ended before the
checkpoint comes back ended, with its addresses (`end`).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct
import time
from typing import Callable, Iterable

from . import kernel, sockets, tcp_fin

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_TIMESTAMP, TCP_REPAIR_WINDOW = 24, 29
REPAIR_ON, REPAIR_OFF, REPAIR_OFF_NO_WINDOW_PROBE = 1, 0, -1
NO_QUEUE, RECV_QUEUE, SEND_QUEUE = 0, 1, 2
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B
TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING = 1, 4, 5, 7, 8, 9, 11
OUR_FIN = (TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_CLOSING)    # this end has shut down writing
OUR_FIN_UNACKED = (TCP_FIN_WAIT1, TCP_LAST_ACK, TCP_CLOSING)
PEER_FIN = (TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING)                 # the peer's FIN received
REPAIRABLE = (TCP_ESTABLISHED, *OUR_FIN, TCP_CLOSE_WAIT)
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
MAX_USER_MSS = 32767   # TCP_MAXSEG's upper bound (the kernel's MAX_TCP_WINDOW)
NR_CONNECT = 42
MAX_BUFFER_GROWTHS = 8
PAIR_READS = 200            # reads of a pair whose queues keep changing before giving up
READ_BUDGET_S = 0.5          # the time a checkpoint's stop may spend reading connections again
UNSETTLED = "its bytes were still moving after {reads} reads of its state"
TCP_INFO_BYTES = 8      # tcpi_state ... tcpi_options, the window scales: the first bytes of tcp_info
SOCK_DESTROY, NLM_F_ACK = 21, 4
WINDOW = struct.Struct("5I")  # struct tcp_repair_window: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup

BlobWriter = Callable[[bytes], list[str]]


def repairable(sock: socket.socket) -> bool:
    """Whether a TCP socket is in a state repaired: ESTABLISHED, or closed by one end or
    both but still held (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)[0] in REPAIRABLE


def capture(pairs: list[tuple[socket.socket, socket.socket]], put_blob: BlobWriter) -> list[tuple[dict, dict] | str]:
    """The repair states of the two ends of each connection (or, for one that could not be
    read consistently, why: UNSETTLED), read in repair mode, which they then leave without
    a window probe and with their own SO_REUSEADDR back (repair mode overrides it), as if
    nothing had happened. Their processes are frozen, but the kernel may still move bytes
    between two reads: a pair is read again when a queue changed while it was read, or
    when one end's state holds bytes as acknowledged that the other end's state has not
    received; the first two reads at once, then a millisecond apart while the stop's
    READ_BUDGET_S lasts. Raises OSError (EPERM without CAP_NET_ADMIN)."""
    entered: list[tuple[socket.socket, int]] = []
    deadline = time.monotonic() + READ_BUDGET_S
    try:
        for sock in (sock for pair in pairs for sock in pair):
            reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_ON)
            entered.append((sock, reuse))
        states = [_read_consistent(pair, deadline) for pair in pairs]
    finally:
        for sock, reuse in entered:
            release(sock, reuse)
    return [pair if isinstance(pair, str) else (_stored(pair[0], put_blob), _stored(pair[1], put_blob))
            for pair in states]


def hold(sock: socket.socket, put_blob: BlobWriter) -> dict | str:
    """The repair state of an established connection whose other end is outside the image,
    for a checkpoint that then kills its process (`sls checkpoint --kill`, CRIU's dump), or
    why not (UNSETTLED: its queues kept changing). The socket is left in repair mode when a
    state is returned: it sends nothing of its own, and even its close (the kernel's
    tcp_close of a socket in repair mode) sends no FIN or reset, so its peer, which runs
    on, sees nothing and a restore can resume the connection where it was (tcp_hold.py
    keeps it open meanwhile); `release` it if the process is not killed after all. Its peer is not stopped: the state is read until two
    reads in a row agree (bytes landing meanwhile), and `moved` tells whether bytes came in
    after that. Raises OSError (EPERM without CAP_NET_ADMIN), the socket released."""
    reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_ON)
    deadline, reads, last = time.monotonic() + READ_BUDGET_S, 0, None
    try:
        while reads < PAIR_READS and (reads < 2 or time.monotonic() < deadline):
            reads += 1
            try:
                state = _read(sock)
            except _Moved:
                continue
            if state == last:
                return _stored(state, put_blob)
            last = state
    except BaseException:
        release(sock, reuse)
        raise
    release(sock, reuse)
    return UNSETTLED.format(reads=reads)


def moved(sock: socket.socket, state: dict) -> bool:
    """Whether a connection held by `hold` (in repair mode) has received bytes, or its
    peer's close, since `state` was read: they were acknowledged to the peer and are not
    in the image, so a restored connection would wait for them for ever."""
    now = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)[0]
    if now not in REPAIRABLE or (now in PEER_FIN) != bool(state.get("peer_fin")):
        return True
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, RECV_QUEUE)
    try:
        return (_seq(sock) - (now in PEER_FIN)) & 0xFFFFFFFF != state["recv_seq"]
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)


def release(sock: socket.socket, reuse_address: int) -> None:
    """Take a socket out of repair mode as it was, without a window probe, with its own
    SO_REUSEADDR back (repair mode overrides it)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_OFF_NO_WINDOW_PROBE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse_address)


class _Moved(Exception):
    """The kernel moved bytes while a socket was read (a queue changed, or the window
    names bytes received after the receive queue was read)."""


def _read_consistent(pair: tuple[socket.socket, socket.socket], deadline: float) -> tuple[dict, dict] | str:
    """Both ends' states, read until they agree (segments already on their way still land
    in a receive queue in repair mode, later on a loaded machine: the loopback's softirq
    work waits for a CPU), or UNSETTLED."""
    reads = 0
    while reads < 2 or (reads < PAIR_READS and time.monotonic() < deadline):
        if reads >= 2:
            time.sleep(0.001)
        reads += 1
        try:
            first, second = _read(pair[0]), _read(pair[1])
        except _Moved:
            continue
        if _agree(first, second) and _agree(second, first):
            return first, second
    return UNSETTLED.format(reads=reads)


def _agree(sender: dict, receiver: dict) -> bool:
    """Whether `receiver` has received every byte `sender` counts as acknowledged (the
    start of its send queue) and no byte `sender` had not sent (modulo 2**32): else the
    kernel moved bytes between the two reads, and the restored ends would each drop the
    other's segments as old, or as acknowledging unsent data, for ever."""
    acknowledged = (sender["send_seq"] - len(sender["send"])) & 0xFFFFFFFF
    sent = (sender["send_seq"] - sender["unsent"]) & 0xFFFFFFFF
    return ((receiver["recv_seq"] - acknowledged) & 0xFFFFFFFF < 1 << 31
            and (sent - receiver["recv_seq"]) & 0xFFFFFFFF < 1 << 31)


def _stored(state: dict, put_blob: BlobWriter) -> dict:
    """A state with its queues as blobs (and their lengths)."""
    return {**state, "recv": put_blob(state["recv"]), "send": put_blob(state["send"]),
            "recv_bytes": len(state["recv"]), "send_bytes": len(state["send"])}


def _read(sock: socket.socket) -> dict:
    """The state of a socket in repair mode. One closed by this end (`fin`) counts its FIN
    in its send sequence (after the last byte) and, until the peer acknowledges it, in its
    send queue's length and, until it is sent, in its unsent length; one whose peer's FIN
    was received (`peer_fin`), in its receive sequence (and the window's rcv_wup): all are
    given without them (a restore sends its own FIN again by a shutdown, and forges the
    peer's: tcp_fin.py)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
    fin, peer_fin = info[0] in OUR_FIN, info[0] in PEER_FIN
    state = {"unsent": max(_ioctl(sock, SIOCOUTQNSD) - fin, 0)}
    for name, queue, length in (("recv", RECV_QUEUE, SIOCINQ), ("send", SEND_QUEUE, SIOCOUTQ)):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        state[f"{name}_seq"], state[name] = _queue(sock, length, fin if name == "send" else peer_fin,
                                                   info[0] in OUR_FIN_UNACKED and name == "send")
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)
    if fin:
        state["fin"] = True     # version 21
    if peer_fin:
        state["peer_fin"] = True
        state["peer_fin_first"] = info[0] != TCP_CLOSING    # CLOSING: both at once, ours first here
    window = _window(sock, peer_fin)
    if _after(window[4], state["recv_seq"]) or _after(window[0], (state["recv_seq"] + window[3]) & 0xFFFFFFFF):
        raise _Moved    # a segment landed after the receive queue was read (the restore refuses such a window)
    state.update(options=info[5], snd_wscale=info[6] & 0xF, rcv_wscale=info[6] >> 4,
                 mss=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
                 timestamp=sock.getsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP) & 0xFFFFFFFF,
                 window=window,
                 sndbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                 rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return state


def _window(sock: socket.socket, peer_fin: bool) -> list[int]:
    """struct tcp_repair_window as a list; with the peer's FIN taken out of rcv_wup (the
    restore refuses a window update point past the end of what was received)."""
    window = list(WINDOW.unpack(sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, WINDOW.size)))
    if peer_fin:
        window[4], window[3] = (window[4] - 1) & 0xFFFFFFFF, window[3] + 1
    return window


def _after(seq: int, other: int) -> bool:
    """Whether sequence number `seq` comes after `other` (modulo 2**32, as the kernel's after())."""
    return 0 < (seq - other) & 0xFFFFFFFF < 1 << 31


def _queue(sock: socket.socket, length_request: int, fin_in_seq: bool = False, fin_in_length: bool = False
           ) -> tuple[int, bytes]:
    """(sequence number after the last byte, the bytes) of the selected queue (a peek: in
    repair mode even the send queue), a FIN taken out of the sequence number and the
    length where they count it; _Moved if the kernel changed it meanwhile."""
    seq, size = _seq(sock), _ioctl(sock, length_request)
    data = sock.recv(size - fin_in_length, socket.MSG_PEEK | socket.MSG_DONTWAIT | socket.MSG_WAITALL) \
        if size > fin_in_length else b""
    if len(data) == size - fin_in_length and (seq, size) == (_seq(sock), _ioctl(sock, length_request)):
        return (seq - fin_in_seq) & 0xFFFFFFFF, data
    raise _Moved


def _seq(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF


def clear_leftovers(connections: Iterable[tuple[tuple, tuple]]) -> int:
    """Destroy the sockets no process holds (orphans left closing by a killed process,
    TIME_WAIT) that occupy one of these (local, peer) address pairs; the number destroyed.
    Why: an application killed with its connections open leaves their ends closing in the
    kernel for seconds to minutes, retransmitting to the same address pairs; the restored
    connection could not take its addresses (EADDRNOTAVAIL), or the leftover's packets and
    resets would reach it. A socket some process holds (the running original, for a clone)
    is left alone. Call before any connection of the restore is made: a destroyed
    leftover sends a reset to its peer's address pair."""
    destroyed = 0
    tcp = socket.IPPROTO_TCP
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, sockets.NETLINK_SOCK_DIAG) as nl:
        for local, peer in connections:
            found = sockets.inet_diag(nl, sockets.SOCK_DIAG_BY_FAMILY, sockets.NLM_F_REQUEST, tcp,
                                      sockets.inet_sockid(local, peer))
            if found is None or struct.unpack_from("=I", found, sockets.INET_DIAG_INODE_OFFSET)[0] != 0:
                continue        # none, or a process holds it
            cookie = found[4 + sockets.INET_DIAG_SOCKID.size + 4: 4 + sockets.INET_DIAG_SOCKID.size + 12]
            if sockets.inet_diag(nl, SOCK_DESTROY, sockets.NLM_F_REQUEST | NLM_F_ACK, tcp,
                                 sockets.inet_sockid(local, peer, cookie)) is None:
                destroyed += 1
    return destroyed


def rebuild(sock: socket.socket, state: dict, local: tuple, peer: tuple, read_blob: Callable[[list[str]], bytes]
            ) -> None:
    """Make a fresh TCP socket the connection `local` -> `peer` of `state`, with the bytes
    it had received, left in repair mode (`load_sent`, then `finish`, once every socket of
    the restore is made). Raises OSError (the address pair is in use: the original still
    runs)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_ON)
    _make_room(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, state["recv_bytes"], state["rcvbuf"])
    _make_room(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, state["send_bytes"], state["sndbuf"])
    sock.bind(local)
    for name, queue in (("recv", RECV_QUEUE), ("send", SEND_QUEUE)):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        start = (state[f"{name}_seq"] - state[f"{name}_bytes"]) & 0xFFFFFFFF
        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, struct.pack("I", start))
    # connect sizes the segments, from the default MSS (536) unless told; TCP_REPAIR_OPTIONS
    # below sets the agreed MSS but does not size them again: 524-byte segments for ever
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, min(state["mss"], MAX_USER_MSS))
    sock.connect(peer)                  # in repair mode: established at once, no handshake
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 0)      # the application's: none
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, _options(state))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, struct.pack("I", state["timestamp"]))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, RECV_QUEUE)
    _put(sock, read_blob(state["recv"]), socket.SO_RCVBUF, SO_RCVBUFFORCE)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)


def load_sent(sock: socket.socket, state: dict, read_blob: Callable[[list[str]], bytes]) -> None:
    """The bytes a `rebuild` socket had sent that its peer had not acknowledged, and its
    window; still in repair mode. Call it once every end of the restore is made, just
    before the `finish`es: bytes put in the send queue arm the retransmission timer (at
    least 200 ms), and a retransmission before the peer's end is made again is answered
    by a reset (no socket has those addresses yet) that kills this end: a restore slowed
    by load made the other end of a loopback connection 200-500 ms after the first."""
    queued = read_blob(state["send"])
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, SEND_QUEUE)
    _put(sock, queued[:len(queued) - state["unsent"]], socket.SO_SNDBUF, SO_SNDBUFFORCE)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, WINDOW.pack(*state["window"]))


def finish(sock: socket.socket, state: dict, reuse_address: int, read_blob: Callable[[list[str]], bytes]) -> None:
    """Leave repair mode (`resume`) and send the bytes the application had written that
    the kernel had not sent yet; `reuse_address`: the application's SO_REUSEADDR.
    Then the FINs, in the order they had come: this end's again by a shutdown (after its
    bytes; a peer that had it acknowledges the copy), the peer's forged (tcp_fin.py)."""
    resume(sock, reuse_address)
    if state["unsent"]:
        _put(sock, read_blob(state["send"])[-state["unsent"]:], socket.SO_SNDBUF, SO_SNDBUFFORCE)
    if state.get("peer_fin") and state["peer_fin_first"]:
        _peer_fin(sock, state)
    if state.get("fin"):
        sock.shutdown(socket.SHUT_WR)
    if state.get("peer_fin") and not state["peer_fin_first"]:
        _peer_fin(sock, state)


def resume(sock: socket.socket, reuse_address: int) -> None:
    """Leave repair mode with a window probe (the peer's answer tells this end what it has
    received), with the application's SO_REUSEADDR back (repair mode overrode it): for a
    socket made by `rebuild`, or the very socket held since the checkpoint (tcp_hold.py)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_OFF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse_address)


def _peer_fin(sock: socket.socket, state: dict) -> None:
    """The peer's FIN, acknowledging what it had acknowledged (the start of the send queue)."""
    acknowledged = state["send_seq"] - state["send_bytes"]
    tcp_fin.send(sock.getsockname(), sock.getpeername(), state["recv_seq"], acknowledged, state["window"][1] >> state["snd_wscale"])


def end(sock: socket.socket, local: tuple, peer: tuple) -> None:
    """Make a fresh TCP socket the connection `local` -> `peer` ended both ways (state
    CLOSE, reading EOF, writing EPIPE), its addresses named by getsockname and SO_PEERNAME
    as before: made in repair mode (no handshake), then aborted (SOCK_DESTROY, which sends
    a reset to the peer's address pair: the connection had ended, and no process holds its
    other end but the restore, which ends it likewise) and its error (ECONNABORTED) taken.
    Raises OSError (the address pair is in use: the original still runs; or the abort was
    refused), the socket left bound and unconnected."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_ON)
    try:
        sock.bind(local)
        sock.connect(peer)
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_OFF_NO_WINDOW_PROBE)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, sockets.NETLINK_SOCK_DIAG) as nl:
            sockets.inet_diag(nl, SOCK_DESTROY, sockets.NLM_F_REQUEST | NLM_F_ACK, socket.IPPROTO_TCP,
                              sockets.inet_sockid(local, peer))
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE:
            raise OSError(errno.ENOENT, "sock_diag did not find the connection to end")
    except OSError:
        abandon(sock)
        raise
    sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)     # reading it clears it


def abandon(sock: socket.socket) -> None:
    """Leave repair mode as a connection reset by its peer, for a connection whose other
    end could not be made again: the application's next call on it fails with ECONNRESET,
    as with a connection to a peer outside the image."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, REPAIR_OFF_NO_WINDOW_PROBE)
    unspecified = ctypes.create_string_buffer(16)    # a struct sockaddr of family AF_UNSPEC: disconnect
    kernel.syscall(NR_CONNECT, sock.fileno(), ctypes.addressof(unspecified), len(unspecified))


def _make_room(sock: socket.socket, option: int, forced: int, queued: int, recorded: int) -> None:
    """The buffer the original had (it held the queued bytes) when bytes are queued and a
    fresh socket's is smaller. Not more: the application fills what it is given, and a
    buffer sized from the bytes it held would grow at every checkpoint and restore."""
    if queued and sock.getsockopt(socket.SOL_SOCKET, option) < recorded:
        sock.setsockopt(socket.SOL_SOCKET, forced, recorded // 2)      # the kernel doubles it


def _put(sock: socket.socket, data: bytes, option: int, forced: int) -> None:
    """Queue all of `data` without blocking; the socket's buffer at least doubles when the
    kernel finds it full: its accounting of the same bytes (socket buffers' overhead) can
    exceed the original's by more than the bytes left (growing by only those, 768 bytes
    failed to fit after 8 growths under load). Raises OSError if it still does not fit."""
    view = memoryview(data)
    for _ in range(MAX_BUFFER_GROWTHS):
        try:
            while view:     # MSG_DONTWAIT, not O_NONBLOCK: the file's flags are the application's
                view = view[sock.send(view, socket.MSG_DONTWAIT):]
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENOMEM, errno.ENOBUFS):   # (a repaired receive
                raise                                                          # queue's answer too)
        size = sock.getsockopt(socket.SOL_SOCKET, option)
        sock.setsockopt(socket.SOL_SOCKET, forced, size // 2 + max(len(view), size // 2))   # the kernel doubles it
    raise OSError(errno.ENOBUFS, f"{len(view)} queued bytes do not fit the socket's buffer")


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
