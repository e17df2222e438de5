"""The FUSE requests pyfuse3 3.5 does not pass to a file system: FALLOCATE, LSEEK and
COPY_FILE_RANGE.

pyfuse3 hands libfuse a table of request handlers (libfuse's struct fuse_lowlevel_ops)
with none of these: libfuse answers them ENOSYS, and the kernel then answers every
fallocate(2) of the mount EOPNOTSUPP (posix_fallocate falls back to writing a byte per
block; `fallocate`, punching holes, databases and VM images fail), serves lseek's
SEEK_DATA/SEEK_HOLE as if the file had no hole (`cp`, `tar` and `rsync` then read a
sparse file's holes as data), and copies copy_file_range(2)'s data through reads and
writes (`cp` of a large file: all of it read and written again, where blocks could be
shared).

`install(...)`, right after `pyfuse3.init` (which fills its table and has libfuse copy it
into the new session), puts C callbacks for them in the session's copy: found as the
bytes of pyfuse3's table (located by its symbol in the extension's symbol table) within
the session's memory. libfuse calls them on the thread that serves the session (the trio
thread, inside pyfuse3's request loop); each calls its Python handler at once and replies
before returning, so a handler must be synchronous and quick (it runs between two steps
of the loop's tasks, as the synchronous part of any pyfuse3 handler does); one that must
wait returns a coroutine, which a task of the mount's nursery then runs to the answer. A
handler raises `pyfuse3.FUSEError` to answer an error; anything else it raises is logged
and answered EIO, never left unanswered (the caller would wait forever).

Simplifications: x86-64 layout of libfuse 3's table and struct fuse_file_info (of which
only copy_file_range's destination handle is read). With a pyfuse3 whose extension has no
symbol table, a libfuse whose session does not hold the table as it was given, or a table
that already has these handlers, nothing is installed and the mount works as before
(`install` says so).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import struct
import sys
import types
from typing import Callable, Coroutine

import pyfuse3
import trio

log = logging.getLogger("slsfs.mount")

OPS_SYMBOL = b"__pyx_v_7pyfuse3_fuse_ops"     # pyfuse3's `cdef fuse_lowlevel_ops fuse_ops`
SESSION_SYMBOL = b"__pyx_v_7pyfuse3_session"   # ... and its `cdef fuse_session* session`
ANCHOR_SYMBOL = b"PyInit_pyfuse3"              # an exported symbol: gives the load address
# struct fuse_lowlevel_ops (libfuse 3, fuse_lowlevel.h): entries by index, 8 bytes each
_INIT, _LOOKUP, _FALLOCATE, _COPY_FILE_RANGE, _LSEEK = 0, 2, 40, 42, 43   # (one ioctl: two declarations under #if)
_FILE_INFO_FH = 16                              # struct fuse_file_info: u64 fh
_ENTRIES = 44                                   # libfuse 3.14's table; later ones add at the end
_SESSION_HEAD = 256                             # the session's fields before its copy of the table, at most
_SHT_SYMTAB = 2
_SECTION = struct.Struct("<IIQQQQIIQQ")     # Elf64_Shdr
_SYMBOL = struct.Struct("<IBBHQQ")          # Elf64_Sym

FALLOCATE_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                      ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
LSEEK_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64,
                                  ctypes.c_int, ctypes.c_void_p)
COPY_FILE_RANGE_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p,
                                            ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t,
                                            ctypes.c_int)
_ENTRY_NAMES = {_FALLOCATE: "fallocate", _COPY_FILE_RANGE: "copy_file_range", _LSEEK: "lseek"}

_handlers: dict[str, Callable] = {}    # the serving mount's, by _ENTRY_NAMES
_callbacks: dict = {}      # the C callbacks libfuse holds, by name: they live as long as the process


def elf_symbols(path: str, names: list[bytes]) -> dict[bytes, tuple[int, int]]:
    """(value, size) of each of `names` found in the ELF64 file's symbol table."""
    found: dict[bytes, tuple[int, int]] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as data:
        if data[:6] != b"\x7fELF\x02\x01":                  # 64-bit, little-endian
            return found
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        for _, kind, _, _, offset, size, link, _, _, _ in sections:
            if kind != _SHT_SYMTAB or link >= shnum:
                continue
            strings = data[sections[link][4]:sections[link][4] + sections[link][5]]
            table = data[offset:offset + size]
            for name in names:
                at = strings.find(b"\0" + name + b"\0")
                if at < 0:
                    continue
                key, pos = struct.pack("<I", at + 1), 0
                while (pos := table.find(key, pos)) >= 0:      # a symbol whose st_name is it
                    if pos % _SYMBOL.size == 0:
                        _, _, _, _, value, sym_size = _SYMBOL.unpack_from(table, pos)
                        found[name] = (value, sym_size)
                        break
                    pos += 1
    return found


def _session_table() -> ctypes.Array | None:
    """The live session's copy of pyfuse3's handler table, as pointers; None if it cannot be
    found for certain."""
    path = pyfuse3.__file__
    try:
        symbols = elf_symbols(path, [OPS_SYMBOL, SESSION_SYMBOL, ANCHOR_SYMBOL])
        library = ctypes.CDLL(path)       # (already loaded: the same handle and addresses)
        anchor = ctypes.cast(getattr(library, ANCHOR_SYMBOL.decode()), ctypes.c_void_p).value
    except (OSError, ValueError, struct.error, AttributeError) as exc:
        log.info("pyfuse3's request table not found (%s): no fallocate, lseek or copy_file_range", exc)
        return None
    if len(symbols) < 3 or symbols[OPS_SYMBOL][1] < _ENTRIES * 8:
        log.info("pyfuse3 has no symbol table to find its request table in: no fallocate, lseek or copy_file_range")
        return None
    base = anchor - symbols[ANCHOR_SYMBOL][0]
    given = ctypes.string_at(base + symbols[OPS_SYMBOL][0], symbols[OPS_SYMBOL][1])
    session = ctypes.c_void_p.from_address(base + symbols[SESSION_SYMBOL][0]).value
    if not session or given.count(bytes(8)) == len(given) // 8:
        return None                      # no session (yet), or an empty table
    at = ctypes.string_at(session, _SESSION_HEAD + len(given)).find(given)
    if at < 0 or at % 8:
        log.info("libfuse's session does not hold pyfuse3's request table: no fallocate, lseek or copy_file_range")
        return None
    return (ctypes.c_void_p * (len(given) // 8)).from_address(session + at)


def install(*, fallocate: Callable[[int, int, int, int, int], None],
            lseek: Callable[[int, int, int], int],
            copy_file_range: Callable[[int, int, int, int, int, int], int],
            spawn: Callable[..., None]) -> bool:
    """Have libfuse pass, in the session `pyfuse3.init` just made (pyfuse3 serves one mount
    per process), FALLOCATE to `fallocate(inode, mode, offset, length, fh)`, LSEEK to
    `lseek(inode, offset, whence)` (the offset found) and COPY_FILE_RANGE to
    `copy_file_range(inode_in, offset_in, inode_out, offset_out, length, fh_out)` (the
    count copied). A handler's coroutine is run by `spawn(async_fn, *args)` (a nursery's
    start_soon: one that serving cancels before its session ends, so that no answer is
    written to a session that is gone). Whether the requests reach them."""
    table = _session_table()
    if table is None or any(table[index] for index in _ENTRY_NAMES):
        return False
    _handlers.update(fallocate=fallocate, lseek=lseek, copy_file_range=copy_file_range, spawn=spawn)
    if not _callbacks:
        _callbacks.update(_make_callbacks())
    for index, name in _ENTRY_NAMES.items():
        table[index] = ctypes.cast(_callbacks[name], ctypes.c_void_p).value
    return True


def _make_callbacks() -> dict:
    """The C callbacks, by _ENTRY_NAMES: each calls its handler in `_handlers`."""
    library = ctypes.CDLL(pyfuse3.__file__)     # libfuse's functions, through pyfuse3's own link
    reply_err = library.fuse_reply_err
    reply_err.argtypes, reply_err.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
    reply_lseek = library.fuse_reply_lseek
    reply_lseek.argtypes, reply_lseek.restype = [ctypes.c_void_p, ctypes.c_int64], ctypes.c_int
    reply_write = library.fuse_reply_write
    reply_write.argtypes, reply_write.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_int

    def answer(request: int, what: str, args: tuple, reply: Callable[[int, int | None], int]) -> None:
        try:
            result = _handlers[what](*args)
        except BaseException:
            answer_failure(request, what, args)
            return
        if isinstance(result, types.CoroutineType):
            _handlers["spawn"](answer_later, request, what, args, reply, result)
        else:
            reply(request, result)

    async def answer_later(request: int, what: str, args: tuple, reply: Callable[[int, int | None], int],
                           coroutine: Coroutine) -> None:
        try:
            result = await coroutine
        except BaseException:
            answer_failure(request, what, args)
            return
        reply(request, result)

    def answer_failure(request: int, what: str, args: tuple) -> None:
        """In an except block: answer the error being handled, EIO (logged) for anything but
        a FUSEError, never nothing (the caller would wait forever); trio.Cancelled (serving
        ends: answered before the session goes) is raised on."""
        exc = sys.exc_info()[1]
        reply_err(request, exc.errno if isinstance(exc, pyfuse3.FUSEError) else errno.EIO)
        if isinstance(exc, trio.Cancelled):
            raise exc
        if not isinstance(exc, pyfuse3.FUSEError):
            log.exception("%s%s failed", what, args)

    @FALLOCATE_CALLBACK
    def on_fallocate(request, inode, mode, offset, length, file_info):
        fh = ctypes.c_uint64.from_address(file_info + _FILE_INFO_FH).value if file_info else 0
        answer(request, "fallocate", (inode, mode, offset, length, fh), lambda req, _: reply_err(req, 0))

    @LSEEK_CALLBACK
    def on_lseek(request, inode, offset, whence, _file_info):
        answer(request, "lseek", (inode, offset, whence), reply_lseek)

    @COPY_FILE_RANGE_CALLBACK
    def on_copy_file_range(request, inode_in, offset_in, _file_in, inode_out, offset_out, file_out, length, _flags):
        fh_out = ctypes.c_uint64.from_address(file_out + _FILE_INFO_FH).value if file_out else 0
        answer(request, "copy_file_range", (inode_in, offset_in, inode_out, offset_out, length, fh_out), reply_write)

    return {"fallocate": on_fallocate, "lseek": on_lseek, "copy_file_range": on_copy_file_range}
