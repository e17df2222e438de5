"""ELF core files from checkpointed process state, so `gdb PROGRAM core` can show a
process of any checkpoint: threads' backtraces, variables, memory.

What goes in (the layout gdb and the kernel use for x86-64 cores):
- one PT_NOTE segment: NT_PRSTATUS (+ NT_FPREGSET) per thread, NT_PRPSINFO,
  NT_AUXV and NT_FILE (which file backs which mapping, so gdb finds the libraries);
- one PT_LOAD segment per mapping, holding its memory as of the checkpoint.

Simplification: the caller supplies memory page by page (`read_page`); pages it
does not have (clean file-backed pages that the image does not store) are read
from the backing file when it is still there, and written as zeros otherwise.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable, Sequence

PAGE = 4096
ET_CORE, EM_X86_64, PT_LOAD, PT_NOTE = 4, 62, 1, 4
NT_PRSTATUS, NT_FPREGSET, NT_PRPSINFO, NT_AUXV, NT_FILE = 1, 2, 3, 6, 0x46494C45
PF_X, PF_W, PF_R = 1, 2, 4
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
USER_REGS_SIZE = 27 * 8


@dataclass
class CoreMapping:
    start: int
    end: int
    perms: str  # "rwxp" as in /proc/PID/maps
    offset: int = 0
    path: str = ""  # backing file, "" for anonymous


@dataclass
class CoreThread:
    tid: int
    regs: bytes  # struct user_regs_struct, 216 bytes
    fpregs: bytes = b""  # the 512-byte FXSAVE area (start of XSAVE), if known
    sigpend: int = 0
    sighold: int = 0


@dataclass
class CoreProcess:
    pid: int
    ppid: int
    pgid: int
    sid: int
    uid: int
    gid: int
    comm: str
    args: str
    threads: Sequence[CoreThread]
    mappings: Sequence[CoreMapping]
    auxv: bytes = b""


def _note(kind: int, desc: bytes, name: bytes = b"CORE\0") -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def _prstatus(proc: CoreProcess, t: CoreThread) -> bytes:
    if len(t.regs) != USER_REGS_SIZE:
        raise ValueError(f"thread {t.tid}: registers are {len(t.regs)} bytes, expected {USER_REGS_SIZE}")
    head = struct.pack("<iiih2xQQiiii", 0, 0, 0, 0, t.sigpend, t.sighold,
                       t.tid, proc.ppid, proc.pgid, proc.sid)
    return head + bytes(64) + t.regs + struct.pack("<i4x", 1 if t.fpregs else 0)


def _prpsinfo(proc: CoreProcess) -> bytes:
    return (struct.pack("<ccbbxxxxQIIiiii", b"R", b"R", 0, 0, 0, proc.uid, proc.gid,
                        proc.pid, proc.ppid, proc.pgid, proc.sid)
            + proc.comm.encode()[:15].ljust(16, b"\0") + proc.args.encode()[:79].ljust(80, b"\0"))


def _nt_file(mappings: Sequence[CoreMapping]) -> bytes:
    files = [m for m in mappings if m.path.startswith("/")]
    head = struct.pack("<QQ", len(files), PAGE)
    ranges = b"".join(struct.pack("<QQQ", m.start, m.end, m.offset // PAGE) for m in files)
    names = b"".join(m.path.encode() + b"\0" for m in files)
    return head + ranges + names


def _flags(perms: str) -> int:
    return (PF_R if "r" in perms else 0) | (PF_W if "w" in perms else 0) | (PF_X if "x" in perms else 0)


def write_core(out: BinaryIO, proc: CoreProcess, read_page: Callable[[int], bytes | None]) -> int:
    """Write the core file of `proc` to `out`; returns its size in bytes."""
    notes = [_note(NT_PRSTATUS, _prstatus(proc, t)) +
             (_note(NT_FPREGSET, t.fpregs[:512]) if t.fpregs else b"") for t in proc.threads]
    notes.append(_note(NT_PRPSINFO, _prpsinfo(proc)))
    if proc.auxv:
        notes.append(_note(NT_AUXV, proc.auxv))
    notes.append(_note(NT_FILE, _nt_file(proc.mappings)))
    note_bytes = b"".join(notes)
    loads = [m for m in proc.mappings if m.end > m.start]
    phnum = 1 + len(loads)
    offset = _EHDR.size + phnum * _PHDR.size
    phdrs = [_PHDR.pack(PT_NOTE, 0, offset, 0, 0, len(note_bytes), 0, 4)]
    data_start = offset + len(note_bytes)
    data_start += -data_start % PAGE
    pos = data_start
    for m in loads:
        size = m.end - m.start
        phdrs.append(_PHDR.pack(PT_LOAD, _flags(m.perms), pos, m.start, 0, size, size, PAGE))
        pos += size
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    out.write(_EHDR.pack(ident, ET_CORE, EM_X86_64, 1, 0, _EHDR.size, 0, 0, _EHDR.size,
                         _PHDR.size, phnum, 0, 0, 0))
    out.write(b"".join(phdrs))
    out.write(note_bytes)
    out.write(bytes(data_start - offset - len(note_bytes)))
    for m in loads:
        backing = _open_backing(m)
        try:
            for addr in range(m.start, m.end, PAGE):
                page = read_page(addr)
                if page is None and backing is not None:
                    page = os.pread(backing, PAGE, m.offset + addr - m.start)
                out.write((page or b"").ljust(PAGE, b"\0")[:PAGE])
        finally:
            if backing is not None:
                os.close(backing)
    return pos


def _open_backing(m: CoreMapping) -> int | None:
    if not m.path.startswith("/"):
        return None
    try:
        return os.open(m.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
