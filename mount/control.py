"""How the `sls` command talks to a running mount daemon.

Finding the daemon: a slsfs mount appears in /proc/self/mountinfo with type
`fuse.slsfs` and the store directory as its source (the `fsname=` option), so any
path inside a mount leads to its store. The daemon listens on the unix socket
`<store>/control.sock` (the store directory is private to its owner).

Protocol (version CONTROL_VERSION, in docs/FORMAT.md): one request per connection,
one JSON object per line each way. Request `{"v": 1, "op": NAME, ...args}`; reply
`{"ok": true, ...result}` or `{"ok": false, "error": "message for the user"}`, maybe
after `{"interim": {...}}` lines (a group checkpoint asked with `interim`: see `request`).
Ops: status, checkpoint {name?}, snapshot {path, name?}, clone {src, dest}, log, stats, diff {a, b},
gc, fsck (log, stats, diff, gc and fsck run in the daemon: it holds the store's writer lock).
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
from collections import namedtuple

CONTROL_VERSION = 1
SOCKET_NAME = "control.sock"
FS_TYPE = "fuse.slsfs"


class ControlError(Exception):
    """The daemon could not be reached or refused the request (message for the user)."""


class MountInfo(namedtuple("MountInfo", "mountpoint store device super_options", defaults=("", ()))):
    """A slsfs mount: its mount point, its store, its device ("major:minor"; the minor
    names the FUSE connection: mount.fusectl) and its superblock's options (allow_other,
    user_id=0, ...). A named tuple: `sls` imports this module first thing, and dataclasses
    (with inspect, ast, dis and tokenize) cost a command ~10 ms of its start."""
    __slots__ = ()


def unescape_mountinfo(field: str) -> str:
    """A path as /proc/self/mountinfo writes it (read with surrogateescape): space, tab,
    newline and backslash are octal escapes, other bytes (UTF-8 letters) are as they are."""
    if "\\" not in field:
        return field
    raw = field.encode(errors="surrogateescape").decode("unicode_escape").encode("latin-1")
    return raw.decode(errors="surrogateescape")


FSNAME_MARK = "slsfs:"
_FSNAME_PLAIN = frozenset(range(0x20, 0x7f)) - set(b",\\")


def store_fsname(store: str) -> str:
    """The mount's source (the `fsname=` option) naming `store`: the path itself, or, for a
    path libfuse cannot carry (its options are comma-separated ASCII, backslash escapes
    removed), FSNAME_MARK and the path's bytes with the others as %XX."""
    raw = os.fsencode(store)
    if all(b in _FSNAME_PLAIN for b in raw):
        return store
    return FSNAME_MARK + "".join(chr(b) if b in _FSNAME_PLAIN and b != 0x25 else f"%{b:02X}" for b in raw)


def store_of_fsname(source: str) -> str:
    """The store a mount's source names (store_fsname's inverse)."""
    if not source.startswith(FSNAME_MARK):
        return source
    raw = source[len(FSNAME_MARK):].encode(errors="surrogateescape")
    return os.fsdecode(re.sub(rb"%([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), raw))


def slsfs_mounts() -> list[MountInfo]:
    found = []
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, source, *super_options = right.split()
            if fstype == FS_TYPE:
                fields = left.split()
                found.append(MountInfo(unescape_mountinfo(fields[4]), store_of_fsname(unescape_mountinfo(source)),
                                       fields[2],
                                       tuple(",".join(super_options).split(","))))
    return found


def find_mount(path: str) -> tuple[MountInfo, str]:
    """The slsfs mount holding `path`, and `path` relative to its root."""
    absolute = os.path.abspath(path)
    best = None
    for info in slsfs_mounts():
        mp = info.mountpoint.rstrip("/") or "/"
        if absolute == mp or absolute.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(best.mountpoint):
                best = info
    if best is None:
        raise ControlError(f"{path} is not inside a slsfs mount (see `sls mount`)")
    rel = os.path.relpath(absolute, best.mountpoint)
    return best, "" if rel == "." else rel


def canonical_mountpoint(mountpoint: str) -> str:
    """`mountpoint` as mountinfo lists it, resolving only its parent: resolving the mount
    point itself, or any other mount, would ask that mount's daemon, and a hung daemon
    elsewhere must not hang us."""
    return os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(mountpoint))),
                        os.path.basename(os.path.abspath(mountpoint)))


def mount_state(mountpoint: str) -> str:
    """'free', 'live' or 'stale' (a mount whose daemon died)."""
    real = canonical_mountpoint(mountpoint)
    if not any(m.mountpoint == real for m in slsfs_mounts()):
        return "free"
    try:
        os.statvfs(mountpoint)                 # always asks the daemon (stat may be cached)
        return "live"
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
            return "stale"
        raise


def socket_path(store: str | os.PathLike) -> str:
    """(A str: pathlib costs a command ~3-6 ms of imports on the way to its first request.)"""
    return os.path.join(store, SOCKET_NAME)


MAX_UNIX_PATH = 107       # bytes of an AF_UNIX address (sun_path: 108, the last a NUL)


def unix_address(path: str) -> tuple[str, int | None]:
    """An AF_UNIX address to bind or connect for the socket file `path`, and the descriptor
    to close once that is done (None: nothing to close): `path` itself, or, when it is
    longer than an address holds (a store deep in a tree: "AF_UNIX path too long", and
    neither `sls mount` nor `sls run` could serve it), the same file reached through
    /proc/self/fd/N/ of its directory, opened here."""
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        return path, None
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}", fd


def connect_unix(sock: socket.socket, path: str) -> None:
    """sock.connect(path), for a path of any length (unix_address)."""
    address, fd = unix_address(path)
    try:
        sock.connect(address)
    finally:
        if fd is not None:
            os.close(fd)


def request(store: str | os.PathLike, op: str, timeout: float = 120.0, **args) -> dict:
    """Send one request to the daemon serving `store`; return its reply (ok only).

    A daemon may send `interim` lines before its reply (asked for with `interim` true: a
    group checkpoint's says which checkpoint it is about to take). If the connection then
    ends with no reply on a socket that is not the one we connected (this process was
    restored from a checkpoint taken while it waited: the restore made its sockets anew),
    the request was done in the instance that asked it: the reply is `ok` with
    `restored` true and the last interim line's fields."""
    path = socket_path(store)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    interim = reply = None
    try:
        try:
            connect_unix(sock, path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no mount daemon is running for store {store} "
                               f"(nothing listens on {path}); mount it with `sls mount`") from None
        connected = os.fstat(sock.fileno()).st_ino
        sock.sendall(json.dumps({"v": CONTROL_VERSION, "op": op, **args}).encode() + b"\n")
        data = b""
        while reply is None and (chunk := sock.recv(65536)):
            *lines, data = (data + chunk).split(b"\n")
            for message in map(json.loads, lines):
                if "interim" in message:
                    interim = message["interim"]
                else:
                    reply = message
        restored = os.fstat(sock.fileno()).st_ino != connected
    except socket.timeout:
        raise ControlError(f"the mount daemon of {store} did not answer {op!r} in {timeout:.0f} s") from None
    except (ConnectionResetError, BrokenPipeError):     # it was exiting (killed, say): its socket went
        restored = False
    finally:
        sock.close()
    if reply is None and interim is not None and restored:
        return {"ok": True, "restored": True, **interim}
    if reply is None:
        raise ControlError(f"the mount daemon of {store} closed the connection (see its log)")
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "the daemon refused the request"))
    return reply
