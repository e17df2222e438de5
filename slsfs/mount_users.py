"""Who uses a mount: the open files, working directories and roots of the processes
inside it, for the commands that must not pull a mount from under them (`sls umount`,
and `sls restore` / `sls run` taking `sls mount`'s mount over). A module of its own: the
take-over is on the path of a restore after a crash, and the file-system verbs
(slsfs.fs_commands) import the store's modules (~25-40 ms)."""
from __future__ import annotations

import os

from .cli import CommandError

LISTED = 20                     # files named in a refusal, at most


def open_files(mountpoint: str, ignore: int | None = None) -> list[str]:
    """'path (pid N comm)' for every fd, cwd or root of a process inside `mountpoint`,
    but process `ignore` (its daemon, which holds the mount's root) and its syncfs helpers
    (which hold a copy of it: mount.flusher). Links first, and a process's name and
    parentage only for one that has a link inside: on the path of a restore after a
    crash (`sls mount`, then `sls restore`), where reading three files of every process
    took most of the scan's 10-40 ms."""
    root = os.path.realpath(mountpoint)
    inside = root.rstrip("/") + "/"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if pid == str(ignore):
            continue
        base = f"/proc/{pid}/"
        try:
            links = ["cwd", "root", *(f"fd/{fd}" for fd in os.listdir(base + "fd"))]
        except OSError:
            continue
        targets = []
        for link in links:
            try:
                target = os.readlink(base + link).removesuffix(" (deleted)")
            except OSError:
                continue
            if target == root or target.startswith(inside):
                targets.append(target)
        if not targets:
            continue
        from mount.flusher import is_helper_of   # (here: with ctypes and subprocess, ~7 ms of a take-over)
        if ignore is not None and is_helper_of(pid, ignore):
            continue
        try:
            with open(base + "comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        found += [f"{target} (pid {pid} {comm})" for target in targets]
    return sorted(set(found))


def refuse_while_busy(mountpoint: str, ignore: int | None, hint: str) -> None:
    """A CommandError naming what is open in `mountpoint` (see open_files), if anything
    is: "MOUNTPOINT is busy, HINT: ..."."""
    busy = open_files(mountpoint, ignore)
    if busy:
        listing = "; ".join(busy[:LISTED]) + (f"; ... {len(busy) - LISTED} more" if len(busy) > LISTED else "")
        raise CommandError(f"{mountpoint} is busy, {hint}: {listing}")
