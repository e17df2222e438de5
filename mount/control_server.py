"""The daemon side of the control socket (`mount.control` is the command's side).

Both daemons answer `<store>/control.sock` the same way: the mount daemon
(mount.daemon) and the group daemon (slsfs.daemon), each with its own ops. This module
holds what they share: the listening socket (owner-only, removed when the daemon stops)
and one exchange of the protocol (a JSON line in, a JSON line out, maybe after `interim`
lines: see mount.control and docs/FORMAT.md). Each connection is served on its own (a
silent client holds up no other; one that sends no whole line within REQUEST_WAIT_S is
answered). A request that
is not JSON, or lacks a field its op needs, gets a "bad request" reply; any other
exception is a bug: logged, answered as an internal error naming the daemon's log, and
the daemon keeps serving.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import trio

from .control import socket_path, unix_address

log = logging.getLogger("slsfs.control")
MAX_REQUEST_CHUNK = 65536
REQUEST_WAIT_S = 60.0        # a client that sends no whole request by then gets "bad request"


@asynccontextmanager
async def control_listener(store: str | os.PathLike, backlog: int) -> AsyncIterator[trio.SocketListener]:
    """The store's control socket, listening, readable and writable by its owner only."""
    path = Path(socket_path(store))
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    address, fd = unix_address(str(path))
    try:
        await sock.bind(address)
    finally:
        if fd is not None:
            os.close(fd)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    try:
        async with trio.SocketListener(sock) as listener:
            yield listener
    finally:
        path.unlink(missing_ok=True)


async def exchange(stream: trio.SocketStream, respond: Callable[[dict], Awaitable[dict]],
                   log_name: str) -> tuple[dict | None, dict]:
    """Read one request from `stream`, answer it with `respond`, send the reply and close
    the stream. Returns (the request, or None if it was not a JSON object; the reply)."""
    async with stream:
        data = b""
        with trio.move_on_after(REQUEST_WAIT_S):
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(MAX_REQUEST_CHUNK)
                if not chunk:
                    break
                data += chunk
        request = None
        try:
            request = json.loads(data)
            if not isinstance(request, dict):
                raise ValueError("a request is one JSON object")
            reply = await respond(request)
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc!r}"}
        except Exception as exc:            # a bug: report it, keep serving
            log.exception("control request failed")
            reply = {"ok": False, "error": f"internal error: {exc!r} (see {log_name})"}
        await send_line(stream, reply)
    return (request if isinstance(request, dict) else None), reply


async def send_line(stream: trio.SocketStream, message: dict) -> None:
    """One JSON line to the client: the reply, or an `interim` line before it (see
    mount.control.request); a client that has gone is no error."""
    try:
        await stream.send_all(json.dumps(message).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
