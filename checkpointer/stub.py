"""The restore stub: a tiny static x86-64 program with no libc, built in memory.

What: a 2-page ELF executable (one RWX PT_LOAD at STUB_BASE) whose code is

    STUB_BASE+0x78  pause_loop: pause(); jmp pause_loop          (syscall at +0x7d)
    STUB_BASE+0x81  reaper:     wait4(-1, &status, __WALL, 0) until -ECHILD; then ends as
                                its last child did: exit_group(its code), or by its signal
                                (SIG_DFL, no core file: kill(getpid(), sig)), or, where
                                that signal cannot kill (PID 1 of a namespace), 128 + sig

and whose second page is zero-filled scratch memory for injected syscalls. Why: a
restored process is grown out of a fresh stub (nothing to undo: no TLS, rseq, robust
list), and the same stub, pointed at `reaper`, serves as the launcher and as PID 1 of a
new PID namespace, reaping orphans and exiting when its last child is gone. The
launcher's only child is PID 1 of the restored namespace (a group's first process, or a
reaper stub), so its wait status is that process's, as the launcher of a group started
afresh passes on its child's: `sls ps` and `sls restore` report how it ended.
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
    "be00080100"      # mov esi, STUB_STATUS
    "ba00000040"      # mov edx, __WALL
    "4531d2"          # xor r10d, r10d
    "b83d000000"      # mov eax, 61 (wait4)
    "0f05"            # syscall
    "4883f8f6"        # cmp rax, -ECHILD
    "75df"            # jne reaper
    "8b3c2500080100"  # mov edi, [STUB_STATUS]     (the last child's wait status)
    "89fb"            # mov ebx, edi
    "83e37f"          # and ebx, 0x7f              (its signal)
    "750b"            # jnz signaled
    "c1ef08"          # shr edi, 8
    "81e7ff000000"    # and edi, 0xff              (its exit code)
    "eb44"            # jmp leave
    "89df"            # signaled: mov edi, ebx
    "be40080100"      # mov esi, STUB_ZEROS        (SIG_DFL)
    "31d2"            # xor edx, edx
    "41ba08000000"    # mov r10d, 8
    "b80d000000"      # mov eax, 13 (rt_sigaction)
    "0f05"            # syscall
    "31ff"            # xor edi, edi
    "be04000000"      # mov esi, RLIMIT_CORE
    "ba40080100"      # mov edx, STUB_ZEROS        (no core file)
    "4531d2"          # xor r10d, r10d
    "b82e010000"      # mov eax, 302 (prlimit64)
    "0f05"            # syscall
    "b827000000"      # mov eax, 39 (getpid)
    "0f05"            # syscall
    "89c7"            # mov edi, eax
    "89de"            # mov esi, ebx
    "b83e000000"      # mov eax, 62 (kill: dies of it)
    "0f05"            # syscall
    "8dbb80000000"    # lea edi, [rbx + 128]       (a namespace's init cannot: 128 + the signal)
    "b8e7000000"      # leave: mov eax, 231 (exit_group)
    "0f05"            # syscall
)
STUB_ENTRY = STUB_BASE + _CODE_OFFSET
STUB_SYSCALL = STUB_ENTRY + 5
STUB_REAPER = STUB_ENTRY + 9
STUB_SCRATCH = STUB_BASE + 0x1000
STUB_SCRATCH_SIZE = 0x1000
STUB_SIZE = 0x2000
STUB_STATUS = STUB_BASE + 0x800     # in the first page, past the code: zero, never injected into
STUB_ZEROS = STUB_BASE + 0x840      # 32 zero bytes: a struct sigaction of SIG_DFL, an rlimit of 0


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
    """Start a stub (looping in pause()) in its own session, stdio on /dev/null, in / (it and
    the stubs cloned from it hold no directory of ours: a mount we run in stays free to go)."""
    fd = os.memfd_create("slsfs-restore-stub", 0)
    try:
        os.write(fd, elf_image())
        return subprocess.Popen([f"/proc/self/fd/{fd}"], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, cwd="/")
    finally:
        os.close(fd)
