"""What a persistence group may be called. A module of its own, without the store: `sls
run` checks the name before it starts a daemon (slsfs.groups imports the store)."""
from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def bad_name_reason(name: str) -> str | None:
    """Why `name` cannot name a group (it becomes a root name, a file name and a label in
    `sls log`), or None if it can."""
    if _NAME.fullmatch(name):
        return None
    return (f"bad group name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
