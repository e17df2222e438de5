"""The ELF core writer: a core built from a stopped process's registers and memory
opens in gdb, which shows the program's functions and variables."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time

import pytest

from slsfs.elfcore import CoreMapping, CoreProcess, CoreThread, write_core

PROGRAM = r"""
#include <unistd.h>
volatile long counter = 0;
void deep_wait(long n) { while (1) { counter = n++; usleep(1000); } }
int main(void) { deep_wait(41); return 0; }
"""
PTRACE_GETREGS, PTRACE_SEIZE, PTRACE_INTERRUPT = 12, 0x4206, 0x4207

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None or shutil.which("gcc") is None,
                                reason="needs gdb and gcc (make test installs them)")


@pytest.fixture
def stopped_program(tmp_path):
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "prog"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(exe), str(src)], check=True)
    proc = subprocess.Popen([str(exe)])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    try:
        time.sleep(0.2)  # let it reach its loop (counter >= 41 either way)
        assert libc.ptrace(PTRACE_SEIZE, proc.pid, None, None) == 0
        assert libc.ptrace(PTRACE_INTERRUPT, proc.pid, None, None) == 0
        os.waitpid(proc.pid, 0x40000000)  # __WALL
        regs = ctypes.create_string_buffer(216)
        assert libc.ptrace(PTRACE_GETREGS, proc.pid, None, regs) == 0
        yield exe, proc.pid, regs.raw
    finally:
        proc.kill()
        proc.wait()


def test_gdb_reads_core(stopped_program, tmp_path):
    exe, pid, regs = stopped_program
    mappings = []
    for line in open(f"/proc/{pid}/maps"):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        path = fields[5] if len(fields) > 5 else ""
        if path.startswith("[vvar") or start >= 1 << 63:
            continue
        mappings.append(CoreMapping(start, end, fields[1], int(fields[2], 16), path))
    mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY)

    def read_page(addr: int) -> bytes | None:
        try:
            return os.pread(mem, 4096, addr)
        except OSError:
            return None

    proc = CoreProcess(pid, os.getpid(), pid, os.getsid(pid), 0, 0, "prog", str(exe),
                       [CoreThread(pid, regs)], mappings, open(f"/proc/{pid}/auxv", "rb").read())
    core = tmp_path / "core"
    with core.open("wb") as f:
        size = write_core(f, proc, read_page)
    os.close(mem)
    assert core.stat().st_size == size
    out = subprocess.run(["gdb", "-batch", "-ex", "bt", "-ex", "print counter", str(exe), str(core)],
                         capture_output=True, text=True, timeout=120).stdout
    assert "deep_wait" in out and "main" in out, out
    assert "$1 = " in out and int(out.split("$1 = ")[1].split()[0]) >= 41, out
