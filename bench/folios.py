"""How large the page-cache folios holding a file are: the cause of the hot-read gap.

    cached_folio_kib(path)     # e.g. 4.0 on FUSE (Linux 6.18), 1024.0 on ext4 after a write

A read(2) served from the page cache copies folio by folio: with 4 KiB folios it walks
and copies 256 of them per MiB (filemap_get_read_batch, folio_mark_accessed, a copy
per folio), with ext4's 1 MiB folios one. Linux 6.18 never gives a FUSE file large
folios (fs/fuse/file.c fuse_init_file_inode sets no folio order on the mapping, so
readahead falls back to order 0 and writes take order-0 folios), whatever the daemon
negotiates; a kernel that enables them for FUSE shows here first.

Measured, not inferred: the file's first pages are mapped (MAP_PRIVATE, read only: the
page-cache folios themselves are mapped, nothing is copied) and read once each (on a hot
file that only maps them; a page not cached would be read in), /proc/self/pagemap gives
each page's frame and /proc/kpageflags whether that frame is the tail of a compound
(large) folio. Needs root (frame numbers read as 0, kpageflags refused): None otherwise.
"""
from __future__ import annotations

import ctypes
import mmap
import os

PAGE = os.sysconf("SC_PAGE_SIZE")
_ENTRY = 8                                   # bytes per page in pagemap and kpageflags
_PRESENT = 1 << 63
_PFN_MASK = (1 << 55) - 1
_COMPOUND_TAIL = 1 << 16                     # KPF_COMPOUND_TAIL (linux/kernel-page-flags.h)
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def cached_folio_kib(path: str | os.PathLike, sample_mib: int = 64) -> float | None:
    """Mean size in KiB of the folios caching the first `sample_mib` MiB of `path`
    (pages it has in the page cache, as a read would find them); None if not measurable."""
    length = min(os.path.getsize(path), sample_mib << 20) // PAGE * PAGE
    if length == 0:
        return None
    frames = _mapped_frames(path, length)
    if not frames:
        return None
    try:
        with open("/proc/kpageflags", "rb") as kpageflags:
            flags = [int.from_bytes(os.pread(kpageflags.fileno(), _ENTRY, frame * _ENTRY), "little")
                     for frame in frames]
    except PermissionError:
        return None
    folios = sum(1 for word in flags if not word & _COMPOUND_TAIL)   # heads and single pages
    return len(flags) * PAGE / 1024 / folios


def _mapped_frames(path: str | os.PathLike, length: int) -> list[int]:
    """Page frame numbers of the first `length` bytes of `path`, mapped and each page
    read once (a hot file's pages are cached already: the reads only map them)."""
    with open(path, "rb") as f:
        address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_PRIVATE, f.fileno(), 0)
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), f"mmap of {path}: {os.strerror(ctypes.get_errno())}")
    try:
        for offset in range(0, length, PAGE):
            ctypes.string_at(address + offset, 1)
        with open("/proc/self/pagemap", "rb") as pagemap:
            raw = os.pread(pagemap.fileno(), length // PAGE * _ENTRY, address // PAGE * _ENTRY)
    finally:
        _libc.munmap(address, length)
    words = (int.from_bytes(raw[i:i + _ENTRY], "little") for i in range(0, len(raw), _ENTRY))
    return [word & _PFN_MASK for word in words if word & _PRESENT and word & _PFN_MASK]
