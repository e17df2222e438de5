"""Directories removed while a process still uses them (its working directory, an open fd).

What: `stand_in(path)` gives, for the time of a `with`, a new empty directory where a
removed directory was (`path` as /proc shows it, ending in " (deleted)"), or, if that name
is taken now, beside it; it is removed again on leaving, so a process that chdir()ed into it
or opened it meanwhile holds a removed directory again, which /proc shows under the same
name as before. Why: a directory's contents are gone with it (only an empty one can be
removed), so an empty directory of the same name is all a program can tell.

Simplifications: each process (each fd) gets its own stand-in, so two processes whose
working directory was the same removed directory no longer share one; owner and mode are
the restorer's (0700).
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

from .procfs import DELETED


def is_removed(path: str) -> bool:
    return path.endswith(DELETED)


@contextmanager
def stand_in(path: str) -> Iterator[str | None]:
    """An empty directory for the removed `path` while inside (None if its parent is gone
    too); removed on leaving."""
    original = path[: -len(DELETED)] if is_removed(path) else path
    made: str | None = original
    try:
        os.mkdir(original, 0o700)
    except FileExistsError:   # the name was taken since: a directory beside it
        made = tempfile.mkdtemp(prefix=".slsfs-removed-", dir=os.path.dirname(original))
    except OSError:
        made = None
    try:
        yield made
    finally:
        if made:
            os.rmdir(made)
