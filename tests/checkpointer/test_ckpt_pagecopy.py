"""Restore's page writer (checkpointer.pagewriter) with a userfaultfd: pages inside the
registered ranges go in by UFFDIO_COPY, the rest of the same run through /proc/PID/mem,
both land where they belong in a real process, and closing the writer hands the ranges
back to ordinary faults (a page never written reads as zeros)."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from checkpointer import CheckpointError, kernel
from checkpointer.kernel import PAGE_SIZE
from checkpointer.pagewriter import UFFDIO_REGISTER_MODE_MISSING, PageWriter
from checkpointer.uffd import UFFD_API, UFFDIO_API, UFFDIO_REGISTER, ioctl

PAGES = 8
HOLDER = f"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, {PAGES * PAGE_SIZE}, 3, 0x22, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
uffd = libc.syscall(323, 0o2000000 | 0o4000)                 # userfaultfd(O_CLOEXEC | O_NONBLOCK)
print(addr, uffd, flush=True)
sys.stdin.read()                                             # never touches the memory
"""


@pytest.fixture
def holder():
    """A process with fresh anonymous memory and a userfaultfd; its address and the fd (ours)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        addr, remote = map(int, proc.stdout.readline().split())
        assert remote >= 0, "the holder could not make a userfaultfd"
        pidfd = kernel.syscall(434, proc.pid, 0)  # pidfd_open
        try:
            uffd = kernel.syscall(438, pidfd, remote, 0)  # pidfd_getfd
        finally:
            os.close(pidfd)
        ioctl(uffd, UFFDIO_API, (ctypes.c_uint64 * 3)(UFFD_API, 0, 0), "UFFDIO_API")
        yield proc, addr, uffd
    finally:
        proc.kill()
        proc.wait()


def _register(uffd: int, start: int, end: int) -> None:
    ioctl(uffd, UFFDIO_REGISTER, (ctypes.c_uint64 * 4)(start, end - start, UFFDIO_REGISTER_MODE_MISSING, 0),
          "UFFDIO_REGISTER")


def _page(n: int) -> bytes:
    return bytes([n + 1]) * PAGE_SIZE


@pytest.mark.parametrize("joined", [False, True], ids=["page_list", "joined_run"])
def test_a_run_across_a_copy_range_lands_in_both_ways(holder, joined):
    proc, addr, uffd = holder
    copy_range = (addr + 4 * PAGE_SIZE, addr + 7 * PAGE_SIZE)
    _register(uffd, *copy_range)
    writer = PageWriter(proc.pid, uffd, [copy_range])
    pages = [_page(n) for n in range(2, 8)]  # pages 2..7: 2-3 before the range, 4-6 in it, 7 after
    writer.write(addr + 2 * PAGE_SIZE, [b"".join(pages)] if joined else pages)
    writer.close()  # closes the userfaultfd too: page 0 may now fault normally
    assert writer.copied_pages == 3
    with open(f"/proc/{proc.pid}/mem", "rb") as mem:
        mem.seek(addr)
        got = mem.read(PAGES * PAGE_SIZE)
    expected = bytes(2 * PAGE_SIZE) + b"".join(pages)
    assert got == expected


def test_without_a_userfaultfd_everything_goes_through_the_mem_file(holder):
    proc, addr, uffd = holder
    os.close(uffd)
    writer = PageWriter(proc.pid)
    writer.write(addr, [_page(0), _page(1)])
    writer.close()
    assert writer.copied_pages == 0
    with open(f"/proc/{proc.pid}/mem", "rb") as mem:
        mem.seek(addr)
        assert mem.read(2 * PAGE_SIZE) == _page(0) + _page(1)


def test_a_page_already_there_is_an_error_not_a_hang(holder):
    proc, addr, uffd = holder
    _register(uffd, addr, addr + PAGES * PAGE_SIZE)
    writer = PageWriter(proc.pid, uffd, [(addr, addr + PAGES * PAGE_SIZE)])
    writer.write(addr, [_page(0)])
    writer.write(addr, [_page(1)])  # the same page again: UFFDIO_COPY answers EEXIST
    with pytest.raises(CheckpointError, match="UFFDIO_COPY.*File exists"):
        writer.close()
