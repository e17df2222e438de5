"""The line a slsfs daemon writes to its --ready-fd once it serves (or failed).

"ok" alone said only that the daemon serves; the command that started it then asked
for `ps` over the control socket to print the group (one more round trip, ~50 ms of
`sls restore`). The line now carries that reply: `ok {"v": CONTROL_VERSION, ...ps}`
(docs/FORMAT.md, "Daemon readiness line"). A failure is `error: <reason>`, or
`refused: <reason>` when what it was asked to restore is not in the store (found by the
daemon, which opens the store, before it starts anything: the command says the reason
as its own error).
Kept apart from slsfs.daemon so that the CLI reads it without importing the daemon;
with it, where the daemon tells the rest (LOG_NAME), which the CLI names in its errors.
"""
from __future__ import annotations

import os
import select
import time



LOG_NAME = "daemon.log"          # the group daemon's log, in the store directory
# How a command runs a daemon's module (`python -P -m MODULE`): -m alone puts the working
# directory first on sys.path, so a user's own `mount/` package or `json.py` there would be
# imported by the daemon in place of slsfs's or the standard library's (it failed to start).
DAEMON_MODULE_FLAGS = ("-P", "-m")
REFUSED = "refused: "


def ready_line(status: dict) -> str:
    """The line for a daemon that serves, with its `ps` reply `status` (no "ok" key)."""
    import json                                  # (not before the daemon's fork: slsfs.cli's imports)
    from mount.control import CONTROL_VERSION
    return "ok " + json.dumps({"v": CONTROL_VERSION, **status})


def parse_ready_line(line: str) -> tuple[bool, dict | None]:
    """(whether the daemon serves, its `ps` reply or None when the line carries none of
    this protocol version): the inverse of ready_line; a bare "ok" is accepted."""
    import json
    from mount.control import CONTROL_VERSION
    word, _, payload = line.partition(" ")
    if word != "ok":
        return False, None
    try:
        status = json.loads(payload) if payload else None
    except ValueError:
        return True, None
    if not isinstance(status, dict) or status.pop("v", None) != CONTROL_VERSION:
        return True, None
    return True, status


def read_line(fd: int, timeout: float) -> str:
    """The line a starting daemon writes to its ready fd `fd` (stripped), or what came
    before EOF or `timeout` seconds ("": it died, or hangs)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()
