"""The restore stub: a tiny static x86-64 program with no libc, built in memory.

What: a 2-page ELF executable (one RWX PT_LOAD at STUB_BASE) whose code is

    STUB_BASE+0x78  pause_loop: pause(); jmp pause_loop          (syscall at +0x7d)
    STUB_BASE+0x81  reaper:     wait4(-1, 0, __WALL, 0) until -ECHILD; exit_group(0)

and whose second page is zero-filled scratch memory for injected syscalls. Why: a
restored process is grown out of a fresh stub (nothing to undo: no TLS, rseq, robust
list), and the same stub, pointed at `reaper`, serves as the launcher and as PID 1 of a
new PID namespace, reaping orphans and exiting when its last child is gone.
`spawn()` starts one from a memfd, so no file is written anywhere.

The machine code was assembled once with `as` and is kept as bytes (see the listing).
"""
from __future__ import annotations

import os
import struct
import subprocess

from . import kernel

STUB_BASE = 0x10000
_CODE_OFFSET = 0x78  # right after the ELF header (64 bytes) and one program header (56)
_CODE = bytes.fromhex(
    "b822000000"      # mov eax, 34 (pause)
    "0f05"            # syscall
    "ebf7"            # jmp pause_loop
    "48c7c7ffffffff"  # reaper: mov rdi, -1
    "31f6"            # xor esi, esi
    "ba00000040"      # mov edx, __WALL
    "4531d2"          # xor r10d, r10d
    "b83d000000"      # mov eax, 61 (wait4)
    "0f05"            # syscall
    "4883f8f6"        # cmp rax, -ECHILD
    "75e2"            # jne reaper
    "b8e7000000"      # mov eax, 231 (exit_group)
    "31ff"            # xor edi, edi
    "0f05"            # syscall
)
STUB_ENTRY = STUB_BASE + _CODE_OFFSET
STUB_SYSCALL = STUB_ENTRY + 5
STUB_REAPER = STUB_ENTRY + 9
STUB_SCRATCH = STUB_BASE + 0x1000
STUB_SCRATCH_SIZE = 0x1000
STUB_SIZE = 0x2000


def elf_image() -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    file_size = _CODE_OFFSET + len(_CODE)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, STUB_ENTRY, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 0, STUB_BASE, STUB_BASE, file_size, STUB_SIZE, 0x1000)
    return header + phdr + _CODE


def exit_when_let_go(tid: int, code: int) -> None:
    """Point the stopped stub task `tid` at exit_group(code): it exits once let go."""
    regs = kernel.get_regs(tid)
    regs.rip, regs.rax, regs.rdi = STUB_SYSCALL, kernel.NR["exit_group"], code
    regs.orig_rax = 0xFFFFFFFFFFFFFFFF
    kernel.set_regs(tid, regs)


def spawn() -> subprocess.Popen:
    """Start a stub (looping in pause()) in its own session, stdio on /dev/null."""
    fd = os.memfd_create("slsfs-restore-stub", 0)
    try:
        os.write(fd, elf_image())
        return subprocess.Popen([f"/proc/self/fd/{fd}"], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        os.close(fd)
