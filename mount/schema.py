"""The layout of one volume inside its object-store Tree (keys, records, format version).

A volume is one COW `Tree` (ordered map bytes -> bytes). Every key starts with a
one-letter kind; numbers are 8-byte big-endian so related keys sort together:

    b"S"                             superblock: JSON {"format", "root_ino", "next_ino"}
    b"I" ino                         inode record (INODE struct below)
    b"D" parent cookie name          directory entry -> ENTRY struct (+ volume name for grafts)
    b"B" ino block                   data block number `block` (BLOCK_SIZE bytes) -> chunk id
    b"X" ino name                    extended attribute -> value
    b"L" ino                         symbolic link target
    b"O" ino                         orphan: inode with no links left, kept while open (b"")

`cookie` is a 63-bit hash of the name (>= FIRST_COOKIE): readdir walks a directory's
entries in cookie order and hands the cookie to the kernel as the resume offset, so a
listing stays stable while entries come and go. Simplification: two names with the
same cookie in one directory could make a resumed listing skip one of them
(probability ~ n^2 / 2^64).

Data blocks never hold bytes past the file size; a missing block is a hole (zeros).
Every block's chunk id is passed as `refs` to Tree.put so the store's GC keeps it.
FORMAT_VERSION is checked when a volume is opened. Documented in docs/FORMAT.md.

Format 2 added the parent to the inode record (a directory's one parent: the kernel asks
for it to reconnect a directory it forgot). Format 1 volumes are still read; their
records become format 2 as they are written, and the superblock with the first of them.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import xxhash

FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)  # read; a volume of format 2 may still hold inode records of format 1
BLOCK_SIZE = 128 * 1024
ROOT_INO = 1
FIRST_COOKIE = 3          # 0 = start of listing; 1 and 2 are kept for "." and ".."
NAME_MAX = 255

SUPER_KEY = b"S"
_U64 = struct.Struct(">Q")
_INODE = struct.Struct("<BIIIIQQqqqIQ")  # version mode nlink uid gid rdev size atime mtime ctime generation parent
_INODE_V1 = struct.Struct("<BIIIIQQqqqI")  # format 1: no parent
NO_PARENT = 0             # an inode record's parent when not recorded (no inode is 0)
_ENTRY = struct.Struct("<Qc")            # child ino, kind (b"i" inode, b"v" grafted volume root)

ENTRY_INODE = b"i"
ENTRY_VOLUME = b"v"


class FormatError(Exception):
    """A volume record is not in a format this code understands."""


def u64(n: int) -> bytes:
    return _U64.pack(n)


def name_cookie(name: bytes) -> int:
    return FIRST_COOKIE + xxhash.xxh3_64_intdigest(name) % ((1 << 63) - FIRST_COOKIE)


def inode_key(ino: int) -> bytes:
    return b"I" + _U64.pack(ino)


def dir_prefix(parent: int) -> bytes:
    return b"D" + _U64.pack(parent)


def entry_key(parent: int, name: bytes) -> bytes:
    return b"D" + _U64.pack(parent) + _U64.pack(name_cookie(name)) + name


def entry_key_at(parent: int, cookie: int) -> bytes:
    return b"D" + _U64.pack(parent) + _U64.pack(cookie)


def split_entry_key(key: bytes) -> tuple[int, bytes]:
    """(cookie, name) of a directory-entry key."""
    return _U64.unpack_from(key, 9)[0], key[17:]


def block_prefix(ino: int) -> bytes:
    return b"B" + _U64.pack(ino)


def block_key(ino: int, block: int) -> bytes:
    return b"B" + _U64.pack(ino) + _U64.pack(block)


def split_block_key(key: bytes) -> int:
    return _U64.unpack_from(key, 9)[0]


def xattr_prefix(ino: int) -> bytes:
    return b"X" + _U64.pack(ino)


def xattr_key(ino: int, name: bytes) -> bytes:
    return b"X" + _U64.pack(ino) + name


def symlink_key(ino: int) -> bytes:
    return b"L" + _U64.pack(ino)


def orphan_key(ino: int) -> bytes:
    return b"O" + _U64.pack(ino)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with `prefix`."""
    return prefix + b"\xff" * 32


@dataclass
class Entry:
    ino: int
    volume: str | None = None    # set when the entry is the root of another (grafted) volume

    def encode(self) -> bytes:
        if self.volume is None:
            return _ENTRY.pack(self.ino, ENTRY_INODE)
        return _ENTRY.pack(self.ino, ENTRY_VOLUME) + self.volume.encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Entry":
        ino, kind = _ENTRY.unpack_from(raw)
        if kind == ENTRY_INODE:
            return cls(ino)
        if kind == ENTRY_VOLUME:
            return cls(ino, raw[_ENTRY.size:].decode())
        raise FormatError(f"unknown directory entry kind {kind!r}")


@dataclass
class Inode:
    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int = 0
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    generation: int = 0
    parent: int = NO_PARENT     # a directory's: the directory holding it (NO_PARENT: not recorded)

    def encode(self) -> bytes:
        return _INODE.pack(FORMAT_VERSION, self.mode, self.nlink, self.uid, self.gid, self.rdev,
                           self.size, self.atime_ns, self.mtime_ns, self.ctime_ns, self.generation,
                           self.parent)

    @classmethod
    def decode(cls, ino: int, raw: bytes) -> "Inode":
        layout = {2: _INODE, 1: _INODE_V1}.get(raw[0]) if raw else None
        if layout is None:
            raise FormatError(f"inode {ino}: record version {raw[:1].hex() or 'missing'}, "
                              f"this slsfs reads versions {', '.join(map(str, FORMAT_VERSIONS))}")
        _, *fields = layout.unpack(raw)
        return cls(ino, *fields)


@dataclass
class Superblock:
    root_ino: int = ROOT_INO
    next_ino: int = ROOT_INO + 1
    format: int = FORMAT_VERSION    # as read; encode() writes FORMAT_VERSION

    def encode(self) -> bytes:
        return json.dumps({"format": FORMAT_VERSION, "root_ino": self.root_ino,
                           "next_ino": self.next_ino}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Superblock":
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise FormatError(f"volume superblock is not JSON ({exc})") from None
        if doc.get("format") not in FORMAT_VERSIONS:
            raise FormatError(f"volume format {doc.get('format')!r}; this slsfs reads formats "
                              f"{', '.join(map(str, FORMAT_VERSIONS))}: upgrade slsfs to mount this store")
        return cls(doc["root_ino"], doc["next_ino"], doc["format"])
