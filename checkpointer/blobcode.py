"""x86-64 machine code for running system calls in a stopped task without one ptrace
round trip per call.

What: `syscall_code(nr, args, result_addr)` is one call (load rax and the argument
registers with immediates, `syscall`, store rax at result_addr); a blob is such calls
followed by `INT3`, whose SIGTRAP stops the traced task where the tracer can read the
results. Why: the capture (batch.py) and the restore both run tens of injected calls per
task; each injected call alone costs four ptrace round trips.

Simplifications: arguments are immediates (no call can take an earlier call's result);
the code is position-independent only in that it uses absolute addresses.
"""
from __future__ import annotations

import struct

_ARG_REGISTERS = (b"\x48\xbf", b"\x48\xbe", b"\x48\xba", b"\x49\xba", b"\x49\xb8", b"\x49\xb9")  # rdi..r9
_MOV_RAX, _SYSCALL, _STORE_RAX = b"\x48\xb8", b"\x0f\x05", b"\x48\xa3"   # movabs rax, imm; syscall; movabs [imm], rax
INT3 = b"\xcc"
_FORMATS = ["<2sQ" + "2sQ" * n + "2s2sQ" for n in range(len(_ARG_REGISTERS) + 1)]


def syscall_code(nr: int, args: tuple[int, ...] | list[int], result_addr: int) -> bytes:
    """mov rax, nr; mov rdi.., args; syscall; mov [result_addr], rax (rcx and r11 are clobbered)."""
    if len(args) > len(_ARG_REGISTERS):
        raise ValueError(f"a system call takes at most {len(_ARG_REGISTERS)} arguments, not {len(args)}")
    mask = 0xFFFFFFFFFFFFFFFF
    return struct.pack(_FORMATS[len(args)], _MOV_RAX, nr & mask,
                       *[part for register, value in zip(_ARG_REGISTERS, args) for part in (register, value & mask)],
                       _SYSCALL, _STORE_RAX, result_addr)


def code_size(arg_count: int) -> int:
    """Bytes of syscall_code for a call with this many arguments."""
    return 10 + 10 * arg_count + 2 + 10
