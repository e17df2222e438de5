"""Asking the kernel for FUSE_HANDLE_KILLPRIV_V2, which pyfuse3 3.5 cannot ask for.

Without it the kernel asks the daemon for the xattr `security.capability` before every
write(2) to a file (to know whether the write must remove it): a GETXATTR round trip per
write, a third of the requests of an SQLite transaction. With it, the kernel leaves the
killing of set-user-ID/set-group-ID bits and of file capabilities on write, truncate and
chown to the daemon (which `mount.operations` does), and marks the super block SB_NOSEC:
an inode found once to have nothing to kill is not asked about again until its mode
gains such a bit or a security.* xattr is set.

pyfuse3 answers the kernel's INIT request through libfuse with the capabilities it
chose, and gives no way to add one. `InitRelay` therefore passes the first request of a
session (the INIT) through a socket pair in place of /dev/fuse, so that it can add the
flag to libfuse's reply before it reaches the kernel, then puts /dev/fuse back under the
same descriptor number:
- `start(fd)`, before libfuse reads its first request: read it from /dev/fuse, keep a
  duplicate of /dev/fuse, put one end of an AF_UNIX SOCK_SEQPACKET pair (one message
  per read, as /dev/fuse gives) at `fd` and queue the request there;
- libfuse reads it from `fd`, calls pyfuse3's init and writes its reply to `fd`;
- `finish(fd)`, before libfuse reads its second request: take the reply, set
  FUSE_HANDLE_KILLPRIV_V2 in its flags if the request is an INIT that offered it and
  the reply accepts the connection, put /dev/fuse back at `fd` and write the reply to it.
Before its INIT is answered the kernel sends no other request, and libfuse reads the
first request with read(2) (splice only once the protocol is negotiated), so nothing
else passes through the pair. `granted` says whether the flag went to the kernel.

Formats (linux/fuse.h, protocol 7.x): a request starts with fuse_in_header (40 bytes:
u32 len, u32 opcode, ...), FUSE_INIT's body with fuse_init_in (u32 major, u32 minor,
u32 max_readahead, u32 flags); a reply with fuse_out_header (16 bytes: u32 len, i32
error, u64 unique), INIT's body with fuse_init_out (u32 major, u32 minor, u32
max_readahead, u32 flags).
"""
from __future__ import annotations

import os
import select
import socket
import struct

import trio

FUSE_INIT = 26
FUSE_HANDLE_KILLPRIV_V2 = 1 << 28
_IN_HEADER = 40
_OUT_HEADER = 16
_FLAGS = struct.Struct("<I")
_FLAGS_AT = 12                     # in fuse_init_in and fuse_init_out alike
_OPCODE_AT = 4
READ_SIZE = 1024 * 1024 + 8192     # /dev/fuse refuses reads shorter than a request may be


class InitRelay:
    """Relays a session's first request and its reply, adding `flags` to an INIT reply."""

    def __init__(self, flags: int = FUSE_HANDLE_KILLPRIV_V2) -> None:
        self.flags = flags
        self.granted = False
        self._device: int | None = None            # /dev/fuse while the pair stands in for it
        self._ours: socket.socket | None = None
        self._fd = -1
        self._offered = False

    async def step(self, fd: int) -> bool:
        """Called before each read of libfuse until it returns False: whether libfuse
        is to read `fd` now (the first request, queued in the pair). The request is
        looked for again before finishing: a signal can end libfuse's read of it with
        EINTR, after which pyfuse3 waits again and reads again."""
        if self._device is None:
            await self.start(fd)
            return True
        if select.select([fd], [], [], 0)[0]:       # not read yet
            return True
        self.finish(fd)
        return False

    async def start(self, fd: int) -> None:
        """Take the first request from /dev/fuse at `fd` and put it behind a socket pair there."""
        await trio.lowlevel.wait_readable(fd)
        request = os.read(fd, READ_SIZE)
        self._offered = (len(request) >= _IN_HEADER + _FLAGS_AT + 4
                         and _FLAGS.unpack_from(request, _OPCODE_AT)[0] == FUSE_INIT
                         and _FLAGS.unpack_from(request, _IN_HEADER + _FLAGS_AT)[0] & self.flags == self.flags)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._device, self._fd = os.dup(fd), fd
        os.dup2(theirs.fileno(), fd, inheritable=False)
        theirs.close()
        ours.setblocking(False)
        ours.send(request)
        self._ours = ours

    def abandon(self) -> None:
        """Put /dev/fuse back at its descriptor, if the pair stands in for it (also for a
        session that ended half way through: no reply is sent then)."""
        if self._device is not None:
            device, self._device = self._device, None
            os.dup2(device, self._fd, inheritable=False)
            os.close(device)
            self._ours.close()

    def finish(self, fd: int) -> None:
        """Put /dev/fuse back at `fd` and hand it libfuse's reply, with the flags added."""
        try:
            reply = self._ours.recv(READ_SIZE)
        except BlockingIOError:                     # no reply: a request that takes none
            reply = b""
        finally:
            self.abandon()
        if not reply:
            return
        if (self._offered and len(reply) >= _OUT_HEADER + _FLAGS_AT + 4
                and struct.unpack_from("<i", reply, 4)[0] == 0):
            patched = bytearray(reply)
            flags = _FLAGS.unpack_from(patched, _OUT_HEADER + _FLAGS_AT)[0]
            _FLAGS.pack_into(patched, _OUT_HEADER + _FLAGS_AT, flags | self.flags)
            reply = bytes(patched)
            self.granted = True
        os.write(fd, reply)
