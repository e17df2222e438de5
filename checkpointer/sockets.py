"""Unix socket pairs: who is connected to whom, and what is queued in them.

What: `unix_info(ino)` asks the kernel (NETLINK_SOCK_DIAG, one exact lookup) for a
Unix socket's type, state, name and peer inode; `queue(sock)` copies what waits in its
receive queue, a stream's bytes or a datagram or seqpacket socket's messages, with the
fds and credentials they carry, without consuming them (the socket is borrowed with
pidfd_getfd and read with MSG_PEEK, stepping with SO_PEEK_OFF); `push_fd` hands one of
our fds to a process being restored (SCM_RIGHTS). Why: a socketpair between two
processes of a tree (or within one) is restored as a new socketpair refilled with the
same bytes or messages (inflight.py: with the files in flight).

Simplifications: the queues of connected pairs and of bound datagram sockets are read
(what other sockets are made of: netsockets.py).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass, field

from . import kernel
from .errors import CheckpointError, Unsupported

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLMSG_ERROR = 1, 2
UDIAG_SHOW_NAME, UDIAG_SHOW_VFS, UDIAG_SHOW_PEER, UDIAG_SHOW_ICONS, UDIAG_SHOW_RQLEN = 0x1, 0x2, 0x4, 0x8, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_VFS, UNIX_DIAG_PEER, UNIX_DIAG_ICONS, UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 0, 1, 2, 3, 4, 6
MAX_QUEUED = 16 << 20
MAX_MESSAGE = 4 << 20
MAX_PASSED = 253            # SCM_MAX_FD: the most fds one message can carry
ANCILLARY_SPACE = socket.CMSG_SPACE(4 * MAX_PASSED) + socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4)
SO_PEEK_OFF, SCM_PIDFD = 42, 4
_buffers = threading.local()
_NR_SOCKETPAIR, _NR_RECVMSG, _NR_CLOSE = 53, 47, 3
MSG_CMSG_CLOEXEC = 0x40000000
TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram", socket.SOCK_SEQPACKET: "seqpacket"}
INET_DIAG_REQUEST = struct.Struct("=BBBBI")   # inet_diag_req_v2 before its socket id
INET_DIAG_SOCKID = struct.Struct(">HH16s16s")  # sport, dport, src, dst (network order); then if, cookie
INET_DIAG_MSG_BYTES, INET_DIAG_INODE_OFFSET = 72, 68   # struct inet_diag_msg, its idiag_inode
INET_DIAG_SHUTDOWN, INET_DIAG_ALL_STATES, NO_COOKIE = 8, 0xFFFFFFFF, b"\xff" * 8


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
    """{type, state, name, peer, queued, max_backlog, shutdown, file_ino} of the Unix socket with
    this inode (shutdown: the kernel's mask, 1 = no more receiving, 2 = no more sending;
    file_ino: the inode number of the socket file its path name made, 0 for none), or None
    if it is not one. `queued` and `max_backlog`: for a listening socket the connections
    waiting to be accepted and its backlog, for another the bytes in its receive queue and
    those it sent that are not read yet. The peer of a connection not yet accepted reads 0
    (it has no inode yet). A listening socket's also has `pending`, the inodes of the sockets
    whose connections wait in its accept queue, in order; or, when they are too many for the
    kernel to list in one reply (about 1,600 here), `pending_unlisted`."""
    shown = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        reply = diag_exchange(nl, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, _unix_request(ino, shown | UDIAG_SHOW_ICONS))
        unlisted = reply in (errno.EMSGSIZE, errno.ENOMEM)     # (this kernel: EMSGSIZE past ~1,600)
        if unlisted:
            reply = diag_exchange(nl, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, _unix_request(ino, shown))
    if isinstance(reply, int):
        return None
    length = struct.unpack_from("=I", reply)[0]
    family, sock_type, state, _, found_ino = struct.unpack_from("=BBBBI", reply, 16)
    info = {"type": TYPES.get(sock_type, str(sock_type)), "state": state, "name": None, "peer": 0,
            "queued": 0, "max_backlog": 0, "shutdown": 0, "file_ino": 0}
    offset = 32
    while offset + 4 <= length:
        attr_len, attr_type = struct.unpack_from("=HH", reply, offset)
        payload = reply[offset + 4: offset + attr_len]
        if attr_type == UNIX_DIAG_ICONS:
            info["pending"] = list(struct.unpack(f"={len(payload) // 4}I", payload[:len(payload) // 4 * 4]))
        elif attr_type == UNIX_DIAG_VFS:      # struct unix_diag_vfs: inode, device of the socket file
            info["file_ino"] = struct.unpack("=I", payload[:4])[0]
        elif attr_type == UNIX_DIAG_PEER:
            info["peer"] = struct.unpack("=I", payload[:4])[0]
        elif attr_type == UNIX_DIAG_NAME:     # a path comes with its terminating NUL
            info["name"] = payload if payload[:1] == b"\0" else payload.split(b"\0")[0]
        elif attr_type == UNIX_DIAG_RQLEN:  # for a listening socket: accept queue and backlog
            info["queued"], info["max_backlog"] = struct.unpack("=II", payload[:8])
        elif attr_type == UNIX_DIAG_SHUTDOWN:
            info["shutdown"] = payload[0]
        offset += (attr_len + 3) & ~3
    if unlisted:
        info["pending_unlisted"] = True
    return info if family == socket.AF_UNIX and found_ino == ino else None


def _unix_request(ino: int, shown: int) -> bytes:
    """struct unix_diag_req for the socket with inode `ino`, asking for the `shown` attributes."""
    return struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, ino, shown, 0xFFFFFFFF, 0xFFFFFFFF)


def inet_sockid(source: tuple, destination: tuple, cookie: bytes = NO_COOKIE) -> tuple[int, bytes]:
    """(address family, struct inet_diag_sockid) for an exact inet_diag lookup."""
    address = ipaddress.ip_address(source[0])
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    packed = [ipaddress.ip_address(a).packed.ljust(16, b"\0") for a in (source[0], destination[0])]
    return family, INET_DIAG_SOCKID.pack(source[1], destination[1], *packed) + struct.pack("=I", 0) + cookie


def inet_diag(nl: socket.socket, kind: int, flags: int, protocol: int, target: tuple[int, bytes]) -> bytes | None:
    """One sock_diag request about one TCP or UDP socket (`target`: inet_sockid's): its
    struct inet_diag_msg and attributes (a lookup), or None (not found, or for a
    SOCK_DESTROY: done). Raises OSError for other refusals."""
    family, sockid = target
    reply = diag_exchange(nl, kind, flags, INET_DIAG_REQUEST.pack(family, protocol, 0, 0, INET_DIAG_ALL_STATES) + sockid)
    if isinstance(reply, bytes):
        return reply[16:struct.unpack_from("=I", reply)[0]]
    if reply in (0, errno.ENOENT):
        return None
    raise OSError(reply, f"sock_diag: {os.strerror(reply)}")


def udp_shutdown(sock: socket.socket, ino: int) -> int:
    """The shutdown mask of a UDP socket (1: no more receiving, 2: no more sending), from
    udp_diag. Its exact lookup finds the socket a datagram from the peer (any, for one not
    connected) to the socket's address would reach: 0 when that is another socket (several
    bound to one address with SO_REUSEPORT), or the socket is unbound."""
    local = sock.getsockname()
    try:
        peer = sock.getpeername()
    except OSError:
        peer = ("::" if sock.family == socket.AF_INET6 else "0.0.0.0", 0)
    if not local[1]:
        return 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        found = inet_diag(nl, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, socket.IPPROTO_UDP, inet_sockid(peer, local))
    if found is None or struct.unpack_from("=I", found, INET_DIAG_INODE_OFFSET)[0] != ino:
        return 0
    offset = INET_DIAG_MSG_BYTES
    while offset + 4 <= len(found):
        attr_len, attr_type = struct.unpack_from("=HH", found, offset)
        if attr_type == INET_DIAG_SHUTDOWN and attr_len > 4:
            return found[offset + 4]
        offset += (max(attr_len, 4) + 3) & ~3
    return 0


def borrow(pid: int, fd: int) -> socket.socket:
    """A socket object on our own dup of another process's fd (close it when done)."""
    return socket.socket(fileno=kernel.borrow_fd(pid, fd))


@dataclass
class Queued:
    """A piece of a receive queue, as a reader would get it: a datagram or seqpacket
    message, or a run of a stream's bytes (a run ends where a sender's fds arrive). `fds`:
    our own fds of the open files passed with it (SCM_RIGHTS), in order (the caller closes
    them); `creds`: (pid, uid, gid) of SCM_CREDENTIALS, when the socket has SO_PASSCRED."""
    data: bytes
    fds: list[int] = field(default_factory=list)
    creds: tuple[int, int, int] | None = None
    sender: str | bytes = ""        # a datagram's sender's address ("": unnamed)


def has_pending(sock: socket.socket) -> bool:
    """Whether a message waits in the socket's receive queue (left there)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return True
    except BlockingIOError:
        return False


def queue(sock: socket.socket, what: str, receive_shut: bool = False, length: int | None = None) -> list[Queued]:
    """The socket's receive queue, left where it is: each message of a datagram or
    seqpacket socket, or a stream's bytes in runs, with the fds and credentials they carry.

    Read with MSG_PEEK, stepping with SO_PEEK_OFF (the socket's own peek offset is put
    back). A peek of a message carrying fds gives us our own copies of them, which is how
    the files in flight are described. In a stream, a peek stops after the first piece
    (skb) carrying fds, and returns the bytes sent before it without any too: where in
    that run the fds arrived cannot be seen (a peek of any byte before them walks on to
    them), so they come back with the run's first byte. A reader taking what is there
    (recvmsg with room for the run) gets the same; one that reads the bytes before them
    with a plain read() would now get, and lose, the fds (CRIU restores streams so too).
    `receive_shut`: its receiving side is shut down (sock_diag's shutdown mask has 1),
    where an empty queue reads as the end of file, size 0, not EAGAIN; the first empty
    read there ends the queue (an empty message queued in such a socket is not kept).
    `length`: a stream's queued bytes, as unix_info gave them: the peeks stop there (an
    empty queue, the usual case, costs no call at all)."""
    stream = sock.type == socket.SOCK_STREAM
    if stream and length == 0:
        return []
    saved = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    if saved < 0 and not has_pending(sock):    # the usual case (a peek without an offset moves nothing)
        return []
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    buffer = _peek_buffer()
    found: list[Queued] = []
    total = 0
    try:
        while True:
            try:
                size, ancillary, flags, sender = sock.recvmsg_into([buffer], ANCILLARY_SPACE,
                                                                   socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return found
            fds, creds = _ancillary(ancillary)
            piece = Queued(bytes(buffer[:size]), fds, creds, sender or "")
            found.append(piece)             # (its fds are the caller's to close from here on)
            if size == 0 and not fds and (stream or receive_shut):
                found.pop()
                return found
            if flags & socket.MSG_CTRUNC:
                raise Unsupported(f"{what}: a queued message carries more than {MAX_PASSED} file descriptors")
            if flags & socket.MSG_TRUNC:
                raise Unsupported(f"{what}: a queued message is larger than {MAX_MESSAGE >> 20} MiB")
            total += size
            if stream and length is not None and total >= length:
                return found
            if total > MAX_QUEUED:
                raise CheckpointError(f"{what}: more than 16 MiB queued in a socket")
    except BaseException:
        close_passed(found)
        raise
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)


def _peek_buffer() -> bytearray:
    """This thread's buffer for peeks, made once: a new 4 MiB one (zeroed, or mapped and
    unmapped by recvmsg) cost 5-150 us a socket at every checkpoint."""
    if not hasattr(_buffers, "peek"):
        _buffers.peek = bytearray(MAX_MESSAGE)
    return _buffers.peek


def _ancillary(ancillary: list[tuple[int, int, bytes]]) -> tuple[list[int], tuple[int, int, int] | None]:
    """The fds (SCM_RIGHTS) and the credentials (SCM_CREDENTIALS) of a peek; a pidfd that
    SO_PASSPIDFD gave us is closed (the restored socket's own option makes it again)."""
    fds: list[int] = []
    creds = None
    for level, kind, payload in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4])
        elif kind == socket.SCM_CREDENTIALS:
            creds = struct.unpack("3i", payload[:12])
        elif kind == SCM_PIDFD:
            os.close(struct.unpack("i", payload[:4])[0])
    return fds, creds


def close_passed(pieces: list[Queued]) -> None:
    """Close our copies of the fds in flight of `queue`'s pieces."""
    for piece in pieces:
        for fd in piece.fds:
            os.close(fd)
        piece.fds = []


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
