"""A FIN segment sent to a restored TCP socket in its peer's name, from a raw socket.

What: `send(local, peer, seq, ack, window)` makes the socket bound to `local` and
connected to `peer` receive a FIN|ACK segment from `peer` with sequence number `seq`
(the peer's FIN: the byte after the last it had sent) acknowledging `ack`.
Why: a connection whose peer had closed its side (CLOSE_WAIT, LAST_ACK, CLOSING) is made
again ESTABLISHED by TCP_REPAIR, which has no way to say that the peer's FIN was received;
the peer, which had its FIN acknowledged, never sends it again. A FIN forged to arrive
from the peer's address (as CRIU's libsoccr does with libnet) puts the restored socket in
the state its reader expects: reading EOF after the queued bytes. The segment carries no
options (no timestamp: the kernel takes a segment without one).
How: IPv4 (also an IPv6 socket's IPv4-mapped addresses) with IPPROTO_RAW (the kernel fills
the IP checksum and length); IPv6 with IPPROTO_RAW too (IPV6_HDRINCL). The TCP checksum is
ours. Needs CAP_NET_RAW (root).
"""
from __future__ import annotations

import ipaddress
import socket
import struct

FIN_ACK = 0x11
TTL = 64


def send(local: tuple, peer: tuple, seq: int, ack: int, window: int) -> None:
    """Deliver the forged FIN (see the module docstring). Raises OSError."""
    src, dst = ipaddress.ip_address(peer[0]), ipaddress.ip_address(local[0])
    if src.version == 6 and src.ipv4_mapped is not None and dst.ipv4_mapped is not None:
        src, dst = src.ipv4_mapped, dst.ipv4_mapped
    tcp = _tcp_header(peer[1], local[1], seq, ack, window, 0)
    pseudo = src.packed + dst.packed + (struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp)) if src.version == 4
                                        else struct.pack("!IxxxB", len(tcp), socket.IPPROTO_TCP))
    tcp = _tcp_header(peer[1], local[1], seq, ack, window, _checksum(pseudo + tcp))
    if src.version == 4:
        family = socket.AF_INET
        packet = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, TTL, socket.IPPROTO_TCP, 0,
                             src.packed, dst.packed) + tcp
    else:
        family = socket.AF_INET6
        packet = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), socket.IPPROTO_TCP, TTL, src.packed, dst.packed) + tcp
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(packet, (str(dst), 0))


def _tcp_header(source_port: int, destination_port: int, seq: int, ack: int, window: int, checksum: int) -> bytes:
    return struct.pack("!HHIIBBHHH", source_port, destination_port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       5 << 4, FIN_ACK, min(window, 0xFFFF), checksum, 0)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
