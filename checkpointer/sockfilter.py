"""A socket's classic BPF filter (SO_ATTACH_FILTER): read at checkpoint, attached again at
restore.

What: `read(fd)` returns the filter attached to socket `fd` (ours: a dup of the process's)
as hex of its 8-byte sock_filter records, or None; `attach(fd, program)` attaches it to a
new socket. Why: a program that filters what its socket receives (a DHCP or discovery
client, a monitoring agent) received everything after a restore.

Simplifications: SO_LOCK_FILTER (the filter may not be changed any more) is not kept; eBPF
programs (SO_ATTACH_BPF) cannot be read back by SO_GET_FILTER and are not kept either.
"""
from __future__ import annotations

import ctypes
import os

SOL_SOCKET, SO_ATTACH_FILTER, SO_GET_FILTER = 1, 26, 26
_libc = ctypes.CDLL(None, use_errno=True)


def read(fd: int) -> str | None:
    """The classic BPF filter of socket `fd` (hex), None if it has none."""
    blocks = ctypes.c_uint(0)      # SO_GET_FILTER counts in 8-byte instructions, not bytes
    if _libc.getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, None, ctypes.byref(blocks)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    if not blocks.value:
        return None
    program = ctypes.create_string_buffer(blocks.value * 8)
    if _libc.getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, program, ctypes.byref(blocks)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return program.raw[: blocks.value * 8].hex()


class _Program(ctypes.Structure):   # struct sock_fprog
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def attach(fd: int, program: str) -> None:
    """Attach the filter `program` (from read) to socket `fd`."""
    code = bytes.fromhex(program)
    fprog = _Program(len(code) // 8, code)
    if _libc.setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, ctypes.byref(fprog), ctypes.sizeof(fprog)) != 0:
        raise OSError(ctypes.get_errno(), f"SO_ATTACH_FILTER: {os.strerror(ctypes.get_errno())}")
