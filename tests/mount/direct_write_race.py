"""Run by test_direct_io.py in a child process: a buffered read that races an
asynchronous O_DIRECT write, made deterministic, then what buffered readers see.

argv: a file path on the mount. The file is written with 0x55 and read through a
buffered descriptor (its pages are now cached). Then a Linux AIO O_DIRECT write of 0xaa
over it is submitted from a buffer registered with a userfaultfd: the kernel drops the
file's cached pages, then takes the buffer's pages before it sends the WRITE, and that
first fault holds the writer there while the buffered descriptor reads the file again:
the daemon answers with the old data, which the kernel caches. The fault is then
resolved with 0xaa and the write completes (io_getevents). Prints JSON: whether the read
during the fault ran, and the number of 4 KiB pages still holding the old byte as read
through the descriptor that read before and through a new buffered open.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import struct
import sys
import threading

SIZE = 64 * 1024
PAGE = 4096
OLD, NEW = 0x55, 0xAA
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
NR_IO_SETUP, NR_IO_DESTROY, NR_IO_GETEVENTS, NR_IO_SUBMIT, NR_USERFAULTFD = 206, 207, 208, 209, 323
IOCB_CMD_PWRITE = 1
UFFD_EVENT_PAGEFAULT = 0x12
UFFDIO_REGISTER_MODE_MISSING = 1


def _uffdio(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (0xAA << 8) | nr       # _IOWR(0xAA, nr, size)


UFFDIO_API, UFFDIO_REGISTER, UFFDIO_COPY = _uffdio(0x3F, 24), _uffdio(0x00, 32), _uffdio(0x03, 40)


class IoCb(ctypes.Structure):           # struct iocb (linux/aio_abi.h), little-endian
    _fields_ = [("data", ctypes.c_uint64), ("key", ctypes.c_uint32), ("rw_flags", ctypes.c_int32),
                ("opcode", ctypes.c_uint16), ("reqprio", ctypes.c_int16), ("fildes", ctypes.c_uint32),
                ("buf", ctypes.c_uint64), ("nbytes", ctypes.c_uint64), ("offset", ctypes.c_int64),
                ("reserved2", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("resfd", ctypes.c_uint32)]


class IoEvent(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


def check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def ioctl(fd: int, request: int, *words: int) -> None:
    buf = (ctypes.c_uint64 * len(words))(*words)
    check(_libc.ioctl(fd, request, ctypes.addressof(buf)), f"ioctl {request:#x}")


def stale_pages(data: bytes) -> int:
    return sum(1 for i in range(0, SIZE, PAGE) if data[i] == OLD)


def main(path: str) -> None:
    with open(path, "wb") as f:
        f.write(bytes([OLD]) * SIZE)
    reader = os.open(path, os.O_RDONLY)
    assert os.pread(reader, SIZE, 0) == bytes([OLD]) * SIZE
    buffer = _libc.mmap(None, SIZE, 3, 0x22, -1, 0)          # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    uffd = check(_libc.syscall(NR_USERFAULTFD, os.O_CLOEXEC), "userfaultfd")
    ioctl(uffd, UFFDIO_API, 0xAA, 0, 0)
    ioctl(uffd, UFFDIO_REGISTER, buffer, SIZE, UFFDIO_REGISTER_MODE_MISSING, 0)
    source = ctypes.create_string_buffer(bytes([NEW]) * SIZE, SIZE)
    seen = {"read_during_write": None}

    def resolve_faults() -> None:
        while True:
            select.select([uffd], [], [])
            message = os.read(uffd, 32)
            if message[0] != UFFD_EVENT_PAGEFAULT:
                continue
            if seen["read_during_write"] is None:       # the writer is held before its WRITE
                seen["read_during_write"] = os.pread(reader, SIZE, 0) == bytes([OLD]) * SIZE
            page = struct.unpack_from("Q", message, 16)[0] & ~(PAGE - 1)
            ioctl(uffd, UFFDIO_COPY, page, ctypes.addressof(source) + page - buffer, PAGE, 0, 0)

    threading.Thread(target=resolve_faults, daemon=True).start()
    writer = os.open(path, os.O_RDWR | os.O_DIRECT)
    context = ctypes.c_ulong(0)
    check(_libc.syscall(NR_IO_SETUP, 1, ctypes.byref(context)), "io_setup")
    iocb = IoCb(opcode=IOCB_CMD_PWRITE, fildes=writer, buf=buffer, nbytes=SIZE, offset=0)
    iocbs = (ctypes.POINTER(IoCb) * 1)(ctypes.pointer(iocb))
    check(_libc.syscall(NR_IO_SUBMIT, context, 1, iocbs), "io_submit")
    event = IoEvent()
    check(_libc.syscall(NR_IO_GETEVENTS, context, 1, 1, ctypes.byref(event), None), "io_getevents")
    _libc.syscall(NR_IO_DESTROY, context)
    os.close(writer)
    seen["written"] = event.res
    seen["stale_pages_held_open"] = stale_pages(os.pread(reader, SIZE, 0))
    again = os.open(path, os.O_RDONLY)
    seen["stale_pages_new_open"] = stale_pages(os.pread(again, SIZE, 0))
    os.close(again)
    os.close(reader)
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
