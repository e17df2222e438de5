"""Directories removed while a process still uses them (its working directory, an open fd).

What: `stand_in(path)` gives, for the time of a `with`, a new empty directory where a
removed directory was (`path` as /proc shows it, ending in " (deleted)"), or, if that name
is taken now, beside it, or, if nobody can make it there (/proc/PID of a process that has
ended), in the temporary directory; it is removed again on leaving (and so are the
directories above it that were gone too, made again for the time being), so a process
that chdir()ed into it or opened it meanwhile holds a removed directory again, which /proc
shows under the same name as before (but in the last case). Why: a directory's contents
are gone with it (only an empty one can be removed), so an empty directory of the same
name is all a program can tell.

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
    """An empty directory for the removed `path` while inside, with the directories above it
    that are gone too (None if it cannot be made); all removed on leaving."""
    original = path[: -len(DELETED)] if is_removed(path) else path
    missing = []
    parent = os.path.dirname(original)
    while parent != os.path.dirname(parent) and not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    made: list[str] = []
    try:
        for directory in reversed(missing):
            os.mkdir(directory, 0o700)
            made.append(directory)
        try:
            os.mkdir(original, 0o700)
            made.append(original)
        except FileExistsError:   # the name was taken since: a directory beside it
            made.append(tempfile.mkdtemp(prefix=".slsfs-removed-", dir=os.path.dirname(original)))
    except OSError:
        pass
    if not made or made[-1] in missing:     # nobody can make it (/proc/PID of a process that ended)
        try:
            made.append(tempfile.mkdtemp(prefix=".slsfs-removed-"))
        except OSError:
            pass
    try:
        yield made[-1] if made and made[-1] not in missing else None
    finally:
        for directory in reversed(made):
            os.rmdir(directory)
