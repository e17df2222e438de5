"""A mount namespace's table of mounts, and the mounts that paths go through.

What: `MountTable(mountinfo)` reads a /proc/PID/mountinfo (mount id, parent, point, file
system type, whether it receives another namespace's mount events); `kept_for(paths)` is every mount some path resolves through (the mount it
ends on and that mount's ancestors: detaching any of them makes the path unreachable);
`detach_points(tops)` the umount2 calls that take whole subtrees away, stacked mounts
included. `held_paths(pids)` is what processes hold by path (fds, mappings, exe, cwd,
root), as /proc names it.
Why: a mount namespace a restore makes is a copy of every mount the restorer had, and
on a machine whose mounts are private (no propagation) it keeps them all alive after the
host unmounts them; its owner detaches what its processes do not use (restore's unused
FUSE mounts, slsfs.rootfs's host mounts of a --root group) and needs both answers.

Simplification: paths are compared as strings (no symbolic links resolved: /proc gives
resolved ones); a mount's parent's point is taken to be a prefix of its own, as in any
mount tree made by mount(2) (a moved or bind-mounted parent may break this; then a path
may be judged to go through fewer mounts than it does).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Mount:
    parent: int      # the parent's mount id (itself or absent for a namespace's root)
    point: str       # where it is mounted, as the reader of the mountinfo sees it
    fstype: str      # "ext4", "fuse.slsfs", "proc", ...
    slave: bool = False   # receives the mounts and unmounts of a peer group (optional field master:N)


class MountTable:
    """The mounts of one mountinfo file, by mount id."""

    def __init__(self, mountinfo: str = "/proc/self/mountinfo") -> None:
        with open(mountinfo) as f:
            self.mounts = {int(fields[0]): _mount(fields) for fields in (line.split() for line in f)}
        self._children: dict[int, list[int]] = {}
        for mount_id, mount in self.mounts.items():
            self._children.setdefault(mount.parent, []).append(mount_id)

    def holding(self, path: str) -> int | None:
        """The mount `path` resolves to: the deepest point on its way, topmost when stacked."""
        on_way = [m for m, mount in self.mounts.items() if within(path, mount.point)]
        if not on_way:
            return None
        deepest = max(len(self.mounts[m].point) for m in on_way)
        there = {m for m in on_way if len(self.mounts[m].point) == deepest}
        return next(m for m in there if not any(self.mounts[other].parent == m for other in there))

    def chain(self, mount_id: int | None) -> set[int]:
        """`mount_id` and its ancestors up to the namespace's root."""
        found: set[int] = set()
        while mount_id in self.mounts and mount_id not in found:
            found.add(mount_id)
            mount_id = self.mounts[mount_id].parent
        return found

    def kept_for(self, paths: Iterable[str]) -> set[int]:
        """Every mount one of `paths` resolves through."""
        return set().union(*(self.chain(self.holding(path)) for path in paths))

    def detach_points(self, tops: Iterable[int]) -> list[str]:
        """The points to detach (MNT_DETACH, one call each, in order) to take away the
        subtrees of `tops`: a point comes once per mount stacked there (a umount2 of a
        path takes its topmost mount)."""
        def stacked(mount_id: int) -> list[str]:
            point = self.mounts[mount_id].point
            return [point] + [p for child in self._children.get(mount_id, []) if self.mounts[child].point == point
                              for p in stacked(child)]
        return [point for top in tops for point in stacked(top)]


def _mount(fields: list[str]) -> Mount:
    """One mountinfo line's fields: id, parent, major:minor, root, point, options, optional
    fields (shared:N, master:N, ...), "-", type, source, super options."""
    separator = fields.index("-")
    return Mount(int(fields[1]), _unescape(fields[4]), fields[separator + 1],
                 any(tag.startswith("master:") for tag in fields[6:separator]))


def held_paths(pids: Iterable[int]) -> list[str]:
    """The paths of what processes `pids` hold: open files, mapped files, executable, cwd
    and root, as the host names them (anonymous kinds and vanished processes left out)."""
    paths = []
    for pid in pids:
        links = [f"/proc/{pid}/{name}" for name in ("exe", "cwd", "root")]
        try:
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
            with open(f"/proc/{pid}/maps") as f:
                paths += [fields[5].rstrip("\n") for fields in (line.split(maxsplit=5) for line in f)
                          if len(fields) == 6]
        except OSError:
            continue
        for link in links:
            try:
                paths.append(os.readlink(link))
            except OSError:
                pass
    return sorted({p.removesuffix(" (deleted)") for p in paths if p.startswith("/")})


def within(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")
