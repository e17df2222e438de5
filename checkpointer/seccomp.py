"""Seccomp filters of every thread: read at checkpoint, installed again at restore.

What: `capture(proc, status)` reads each thread's chain of filters (PTRACE_SECCOMP_GET_FILTER
works per tracee, and every thread is one); identical programs are stored once and each
thread names its chain by index, oldest first. `install(main, threads, record, ...)` puts
them back: the filters every thread has (the longest common start of the chains: those
installed before the threads were created, or with TSYNC) once, with TSYNC, from the main
thread, so the threads share them as before; then each thread's own further filters from
inside that thread, without TSYNC (seccomp(2) without it filters the calling thread only).
Why: a thread may install filters of its own (a sandboxed worker), and a restore that gave
every thread the main thread's filters would silently let a sandboxed thread do what its
filter forbade, or forbid the others what they may do.

Cost in the stop: one PTRACE_SECCOMP_GET_FILTER per thread (it fails at once with EINVAL
for a thread without filters), nothing else when no thread has a filter.

Simplifications: a thread's own filters that are identical in two threads come back as two
copies (the kernel can share a filter only by clone or TSYNC): a later TSYNC from one of
those threads then fails with the other's TID, as it would have succeeded before. A thread
other than the main one in seccomp strict mode is not seen (only the main thread's
status is read for strict mode, which is refused).
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from . import kernel
from .errors import Unsupported
from .inject import Injector

PTRACE_SECCOMP_GET_FILTER = 0x420C
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC = 1, 1
PR_SET_NO_NEW_PRIVS = 38
SOCK_FILTER_BYTES = 8            # one struct sock_filter
_ptrace = ctypes.CDLL(None, use_errno=True).ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p]


def capture(pid: int, tids: list[int], status: dict[str, str]) -> dict:
    """The record of the process's filters (docs/FORMAT.md, `seccomp`): `filters`, the
    distinct programs (hex), `threads`, one chain of indices into them per entry of `tids`
    (the order of the image's `threads`), oldest first, and `no_new_privs`. `status`: the
    main thread's, read while frozen: a thread gets a filter only from a seccomp() call of
    its own process, so one whose mode reads 0 there has none, and the kernel is not asked
    (one ptrace request fewer in every stop of a process without filters)."""
    mode = int(status.get("Seccomp", "0"))
    if mode == 1:
        raise Unsupported(f"process {pid} is in seccomp strict mode, which cannot be restored")
    programs: dict[str, int] = {}
    chains = [[programs.setdefault(program, len(programs)) for program in _chain(tid)]
              if tid != pid or mode else [] for tid in tids]
    return {"filters": list(programs), "threads": chains, "no_new_privs": status.get("NoNewPrivs", "0") == "1"}


def _chain(tid: int) -> list[str]:
    """The filters of one thread (hex programs), oldest first; [] if it has none. (A direct
    ctypes call, no exception for the common answer EINVAL: this runs for every thread in
    the stop.)"""
    newest_first: list[str] = []
    while True:
        count = _ptrace(PTRACE_SECCOMP_GET_FILTER, tid, len(newest_first), None)
        if count < 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):     # no filter at all / no more filters
                return newest_first[::-1]
            raise OSError(err, f"PTRACE_SECCOMP_GET_FILTER of task {tid}: {os.strerror(err)}")
        buf = ctypes.create_string_buffer(count * SOCK_FILTER_BYTES)
        if _ptrace(PTRACE_SECCOMP_GET_FILTER, tid, len(newest_first), buf) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"PTRACE_SECCOMP_GET_FILTER of task {tid}: {os.strerror(err)}")
        newest_first.append(buf.raw.hex())


def chains(record: dict, threads: int) -> list[list[str]]:
    """Each thread's filters (hex programs, oldest first) from a `seccomp` record; an image
    before version 19 has no `threads`: every thread had the main thread's filters."""
    filters = record["filters"]
    per_thread = record.get("threads", [list(range(len(filters)))] * threads)
    return [[filters[i] for i in chain] for chain in per_thread]


def install(main: Injector, threads: list[Injector], record: dict) -> None:
    """Install the filters of `record` into a restored process: `main` is an injector into
    its main thread with scratch room for the largest program plus 64 bytes (its syscall
    address is used by every thread), `threads` the injectors of all its threads in the
    image's order (the main thread's first). Call it once everything else injected is done,
    unless the tasks are traced with seccomp suspended."""
    per_thread = chains(record, len(threads))
    own_addresses = [inj.syscall_addr for inj in threads]
    for inj in threads:
        inj.syscall_addr = main.syscall_addr
    try:
        if record["no_new_privs"]:
            for inj in threads:
                inj.check(kernel.NR["prctl"], PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, what="PR_SET_NO_NEW_PRIVS")
        shared = _common_start(per_thread)
        saved = main.read(main.scratch, main.scratch_size)
        for program in shared:
            _add_filter(main, main, program, SECCOMP_FILTER_FLAG_TSYNC)
        for inj, chain in zip(threads, per_thread):
            for program in chain[len(shared):]:
                _add_filter(main, inj, program, 0)
        main.write(main.scratch, saved)
    finally:
        for inj, address in zip(threads, own_addresses):
            inj.syscall_addr = address


def _common_start(per_thread: list[list[str]]) -> list[str]:
    """The longest list of filters every chain starts with."""
    common: list[str] = []
    for programs in zip(*per_thread):
        if any(program != programs[0] for program in programs):
            break
        common.append(programs[0])
    return common


def _add_filter(memory: Injector, inj: Injector, program_hex: str, flags: int) -> None:
    """seccomp(SET_MODE_FILTER) of one program, run by `inj`'s thread (the program is put
    in `memory`'s scratch area: the threads share their memory)."""
    program = bytes.fromhex(program_hex)
    code = memory.put(program, 64)
    prog = memory.put(struct.pack("HxxxxxxQ", len(program) // SOCK_FILTER_BYTES, code))
    inj.check(kernel.NR["seccomp"], SECCOMP_SET_MODE_FILTER, flags, prog, what="seccomp(SET_MODE_FILTER)")


def largest(record: dict) -> int:
    """Bytes of the largest program of a `seccomp` record (0: none)."""
    return max((len(program) // 2 for program in record["filters"]), default=0)
