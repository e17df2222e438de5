"""Unix socket pairs: who is connected to whom, and the bytes queued in them.

What: `unix_info(ino)` asks the kernel (NETLINK_SOCK_DIAG, one exact lookup) for a
Unix socket's type, state, name and peer inode; `queued(sock)` copies the bytes waiting
in a stream socket's receive queue and `messages(sock)` the messages waiting in a
datagram or seqpacket one, without consuming them (the socket is borrowed with
pidfd_getfd and read with MSG_PEEK, stepping with SO_PEEK_OFF); `push_fd` hands one of
our fds to a process being restored (SCM_RIGHTS). Why: a socketpair between two
processes of a tree (or within one) is restored as a new socketpair refilled with the
same bytes or messages.

Simplifications: only connected pairs (other sockets: netsockets.py); fds in flight
(SCM_RIGHTS) in a queued message are refused, in a stream's queue not seen.
"""
from __future__ import annotations

import os
import socket
import struct

from . import kernel
from .errors import CheckpointError, Unsupported

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLMSG_ERROR = 1, 2
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER, UDIAG_SHOW_RQLEN = 0x1, 0x4, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_PEER, UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 0, 2, 4, 6
MAX_QUEUED = 16 << 20
MAX_MESSAGE = 4 << 20
SO_PEEK_OFF = 42
_NR_SOCKETPAIR, _NR_RECVMSG, _NR_CLOSE = 53, 47, 3
MSG_CMSG_CLOEXEC = 0x40000000
TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram", socket.SOCK_SEQPACKET: "seqpacket"}


def diag_exchange(nl: socket.socket, kind: int, flags: int, request: bytes) -> bytes | int:
    """One NETLINK_SOCK_DIAG request on `nl` (`request`: the message after the netlink
    header) and its one reply: the reply, netlink header included, or the error number of
    an error reply (0: an acknowledgement)."""
    nl.send(struct.pack("=IHHII", 16 + len(request), kind, flags, 1, 0) + request)
    reply = nl.recv(65536)
    if struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
        return -struct.unpack_from("=i", reply, 16)[0]
    return reply


def unix_info(ino: int) -> dict | None:
    """{type, state, name, peer, queued, max_backlog, shutdown} of the Unix socket with this
    inode (shutdown: the kernel's mask, 1 = no more receiving, 2 = no more sending), or None
    if it is not one."""
    request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, ino,
                          UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        reply = diag_exchange(nl, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, request)
    if isinstance(reply, int):
        return None
    length = struct.unpack_from("=I", reply)[0]
    family, sock_type, state, _, found_ino = struct.unpack_from("=BBBBI", reply, 16)
    info = {"type": TYPES.get(sock_type, str(sock_type)), "state": state, "name": None, "peer": 0,
            "queued": 0, "max_backlog": 0, "shutdown": 0}
    offset = 32
    while offset + 4 <= length:
        attr_len, attr_type = struct.unpack_from("=HH", reply, offset)
        payload = reply[offset + 4: offset + attr_len]
        if attr_type == UNIX_DIAG_PEER:
            info["peer"] = struct.unpack("=I", payload[:4])[0]
        elif attr_type == UNIX_DIAG_NAME:
            info["name"] = payload
        elif attr_type == UNIX_DIAG_RQLEN:  # for a listening socket: accept queue and backlog
            info["queued"], info["max_backlog"] = struct.unpack("=II", payload[:8])
        elif attr_type == UNIX_DIAG_SHUTDOWN:
            info["shutdown"] = payload[0]
        offset += (attr_len + 3) & ~3
    return info if family == socket.AF_UNIX and found_ino == ino else None


def borrow(pid: int, fd: int) -> socket.socket:
    """A socket object on our own dup of another process's fd (close it when done)."""
    return socket.socket(fileno=kernel.borrow_fd(pid, fd))


def queued(sock: socket.socket, what: str) -> bytes:
    """The bytes in a stream socket's receive queue, left where they are."""
    try:
        data = sock.recv(MAX_QUEUED + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""
    if len(data) > MAX_QUEUED:
        raise CheckpointError(f"{what}: more than 16 MiB queued in a socket")
    return data


def has_pending(sock: socket.socket) -> bool:
    """Whether a message waits in the socket's receive queue (left there)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return True
    except BlockingIOError:
        return False


def messages(sock: socket.socket, what: str, receive_shut: bool = False) -> list[bytes]:
    """The messages in a datagram or seqpacket socket's receive queue, left where they are
    (the socket's own peek offset is put back). `receive_shut`: its receiving side is shut
    down (sock_diag's shutdown mask has 1), where an empty queue reads as the end of file,
    size 0, not EAGAIN; the first empty read there ends the queue (an empty message queued
    in such a socket is not kept)."""
    saved = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    if saved < 0 and not has_pending(sock):    # the usual case (a peek without an offset moves nothing)
        return []
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    buffer = bytearray(MAX_MESSAGE)            # one buffer for every peek
    found: list[bytes] = []
    total = 0
    try:
        while True:
            try:
                size, ancillary, flags, _ = sock.recvmsg_into([buffer], socket.CMSG_SPACE(4 * 253),
                                                              socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return found
            if size == 0 and receive_shut and not ancillary:
                return found
            if ancillary:
                _close_passed_fds(ancillary)
                raise Unsupported(f"{what}: a queued message carries file descriptors or credentials "
                                  "(fds in flight cannot be checkpointed)")
            if flags & socket.MSG_TRUNC:
                raise Unsupported(f"{what}: a queued message is larger than {MAX_MESSAGE >> 20} MiB")
            found.append(bytes(buffer[:size]))
            total += size
            if total > MAX_QUEUED:
                raise CheckpointError(f"{what}: more than 16 MiB queued in a socket")
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)


def _close_passed_fds(ancillary: list[tuple[int, int, bytes]]) -> None:
    """Close the fds a peek of SCM_RIGHTS gave us."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            for fd in struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]):
                os.close(fd)


def push_fd(inj, tid: int, fd: int) -> int:
    """Give the process that `inj` drives (task `tid`) a copy of our `fd`: SCM_RIGHTS over a
    socketpair made inside it. Returns the fd number it got there (close-on-exec)."""
    inj.check(_NR_SOCKETPAIR, socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0, inj.scratch,
              what="socketpair")
    sending_end, receiving_end = struct.unpack("ii", inj.read(inj.scratch, 8))
    try:
        with borrow(tid, sending_end) as sender:
            socket.send_fds(sender, [b"f"], [fd])
        data, control = inj.scratch + 64, inj.scratch + 128
        iov = inj.put(struct.pack("QQ", data, 1), 16)
        header = inj.put(struct.pack("QI4xQQQQi4x", 0, 0, iov, 1, control, 24, 0), 192)
        inj.check(_NR_RECVMSG, receiving_end, header, MSG_CMSG_CLOEXEC, what="recvmsg (an fd handed over)")
        length, level, kind, received = struct.unpack("QiiI", inj.read(control, 20))
        if (length, level, kind) != (20, socket.SOL_SOCKET, socket.SCM_RIGHTS):
            raise OSError(f"no fd came through the socketpair ({length}, {level}, {kind})")
        return received
    finally:
        inj.call(_NR_CLOSE, sending_end)
        inj.call(_NR_CLOSE, receiving_end)
