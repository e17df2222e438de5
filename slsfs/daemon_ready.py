"""The line a slsfs daemon writes to its --ready-fd once it serves (or failed).

"ok" alone said only that the daemon serves; the command that started it then asked
for `ps` over the control socket to print the group (one more round trip, ~50 ms of
`sls restore`). The line now carries that reply: `ok {"v": CONTROL_VERSION, ...ps}`
(docs/FORMAT.md, "Daemon readiness line"). A failure is `error: <reason>`.
Kept apart from slsfs.daemon so that the CLI reads it without importing the daemon.
"""
from __future__ import annotations

import json

from mount.control import CONTROL_VERSION


def ready_line(status: dict) -> str:
    """The line for a daemon that serves, with its `ps` reply `status` (no "ok" key)."""
    return "ok " + json.dumps({"v": CONTROL_VERSION, **status})


def parse_ready_line(line: str) -> tuple[bool, dict | None]:
    """(whether the daemon serves, its `ps` reply or None when the line carries none of
    this protocol version): the inverse of ready_line; a bare "ok" is accepted."""
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
