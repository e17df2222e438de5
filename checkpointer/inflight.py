"""What waits in a Unix socket's receive queue besides bytes: file descriptors in flight
(SCM_RIGHTS) and credentials (SCM_CREDENTIALS), recorded with the queue and sent again
in the same order and at the same boundaries at restore.

What: `record_queue` turns the pieces that sockets.queue peeked into a record's `data`
blob (a `unix_pair`'s, or a bound datagram `socket`'s), `rights` (which message, or which
run of a stream's bytes, carried which image files), `creds` and `senders`;
`queued_pieces` gives them back at restore, and `refill` sends them again (through a new
pair's other end, or an unnamed socket connected to the bound one), each piece with its
files (our fds of them) and credentials.
Why: a master handing connections to its workers, socket activation, privilege-separated
daemons and Wayland clients pass fds over Unix sockets; a checkpoint taken while one is
on its way must deliver it after the restore, not drop it.

A file in flight is described like any open file (files.FileCapture: one record per
open file description, shared with the fds of processes that hold the same one); a Unix
socket in flight may hold files in flight of its own, down to MAX_DEPTH.
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Callable

from .sockets import Queued

MAX_DEPTH = 4       # sockets in flight inside sockets in flight, this deep at most


def record_queue(pieces: list[Queued], stream: bool, file_id: Callable[[int], int]) -> tuple[bytes, dict]:
    """(the `data` blob's bytes, the record's `rights`, `creds` and `senders`) of a receive queue;
    `file_id(fd)`: the image file of one of our fds in flight. A stream's data is its bytes;
    a datagram or seqpacket socket's, each message as a u32 LE length then its bytes.
    `rights`: [offset, length, [file ids]] of each run of a stream's bytes that carries
    fds, [message index, [file ids]] of each message that does; `creds`: [offset or index,
    pid, uid, gid] where the credentials change (a stream) or of each message;
    `senders`: [message index, hex of the address] of each datagram from a named socket
    (a bound datagram socket receives from many)."""
    rights: list[list] = []
    creds: list[list[int]] = []
    senders: list[list] = []
    offset = 0
    for index, piece in enumerate(pieces):
        at = offset if stream else index
        if piece.sender and not stream:
            name = piece.sender.encode() if isinstance(piece.sender, str) else piece.sender
            senders.append([index, name.hex()])
        if piece.fds:
            ids = [file_id(fd) for fd in piece.fds]
            rights.append([at, len(piece.data), ids] if stream else [at, ids])
        if piece.creds is not None and not (stream and creds and creds[-1][1:] == list(piece.creds)):
            creds.append([at, *piece.creds])
        offset += len(piece.data)
    if stream:
        data = b"".join(piece.data for piece in pieces)
    else:
        data = b"".join(struct.pack("<I", len(piece.data)) + piece.data for piece in pieces)
    extra = {}
    if rights:
        extra["rights"] = rights
    if creds:
        extra["creds"] = creds
    if senders:
        extra["senders"] = senders
    return data, extra


def queued_pieces(record: dict, data: bytes) -> list[Queued]:
    """The pieces of a record's queue (record_queue's), each to be sent by one sendmsg: a
    stream's bytes cut where fds or credentials start and end; with file ids for fds."""
    rights, creds = record.get("rights", []), record.get("creds", [])
    if record["type"] != "stream":
        messages = _messages(data)
        by_index = {index: ids for index, ids in rights}
        creds_of = {at: tuple(c) for at, *c in creds}
        senders = {index: bytes.fromhex(name) for index, name in record.get("senders", [])}
        return [Queued(m, by_index.get(i, []), creds_of.get(i), senders.get(i, "")) for i, m in enumerate(messages)]
    cuts = sorted({0, len(data)} | {at for at, _, _ in rights} | {at + length for at, length, _ in rights}
                  | {at for at, *_ in creds})
    by_offset = {at: ids for at, _, ids in rights}
    pieces = []
    for start, end in zip(cuts, cuts[1:]):
        current = [c for c in creds if c[0] <= start]
        pieces.append(Queued(data[start:end], by_offset.get(start, []), tuple(current[-1][1:]) if current else None))
    return pieces


def refill(sender: socket.socket, pieces: list[Queued], our_fds: Callable[[list[int]], list[int]],
           sender_pid: Callable[[int], int], named: "NamedSenders | None" = None) -> None:
    """Send each piece through `sender` (connected to the receiving socket), or a datagram
    from a named socket through the one `named` binds to that name, if it can: its files as
    our fds (`our_fds(file ids)`, closed here once sent) and its credentials, the pid as
    `sender_pid(pid)` gives it in our namespace."""
    for piece in pieces:
        through = (named(piece.sender) if named and piece.sender else None) or sender
        ancillary = []
        fds = our_fds(piece.fds) if piece.fds else []
        try:
            if fds:
                ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds)))
            if piece.creds is not None:
                pid, uid, gid = piece.creds
                ancillary.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                  struct.pack("3i", sender_pid(pid), uid, gid)))
            view = memoryview(piece.data)
            while True:
                sent = through.sendmsg([view], ancillary)
                view, ancillary = view[sent:], []      # the fds and credentials go with the first part
                if not view:
                    break
        finally:
            for fd in fds:
                socket.close(fd)


class NamedSenders:
    """Sockets of ours bound to the names that queued datagrams were sent from, each
    connected to the receiving socket (`target`, an address to connect to), so that they
    are sent again from there and the reader's recvfrom names their sender as before (a
    server replying to it). An abstract name, or an absolute path (through `remap`) where
    no file is now: bound for the time of the refill, the socket file removed after. A
    name that cannot be had gives None (sent from an unnamed socket): one taken (its
    socket alive, or restored bound there), a relative path (its sender's directory is
    not known)."""

    def __init__(self, target: str | bytes, remap: Callable[[str], str]):
        self.target, self.remap = target, remap
        self.made: dict[bytes, socket.socket | None] = {}
        self.paths: list[str] = []      # socket files we made, removed by close()

    def __call__(self, name: str | bytes) -> socket.socket | None:
        raw = name.encode() if isinstance(name, str) else name
        if raw not in self.made:
            self.made[raw] = self._bound(raw)
        return self.made[raw]

    def missing(self, pieces: list[Queued]) -> int:
        """How many of the pieces come from a named socket whose name could not be had."""
        return sum(1 for piece in pieces if piece.sender and self(piece.sender) is None)

    def _bound(self, raw: bytes) -> socket.socket | None:
        if raw[:1] not in (b"\0", b"/"):
            return None
        address = raw if raw[:1] == b"\0" else self.remap(os.fsdecode(raw))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
            if isinstance(address, str):
                self.paths.append(address)
            sock.connect(self.target)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return None
        return sock

    def close(self) -> None:
        for sock in self.made.values():
            if sock is not None:
                sock.close()
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _messages(framed: bytes) -> list[bytes]:
    """The messages of a datagram or seqpacket pair's `data` (u32 LE length + bytes each)."""
    found, offset = [], 0
    while offset < len(framed):
        (length,) = struct.unpack_from("<I", framed, offset)
        found.append(framed[offset + 4:offset + 4 + length])
        offset += 4 + length
    return found
