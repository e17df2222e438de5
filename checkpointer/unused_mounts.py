"""The FUSE mounts a restore's new mount namespace copied and its processes do not use, detached.

What: `detach_unused_fuse(inj, pids, keep)`, run once the restored processes are built and
before they run, detaches (umount2 MNT_DETACH, injected into `inj`, a task of the
namespace, so nothing outside it changes) each FUSE mount (types fuse, fuseblk, fuse.*)
that the host's unmount would not reach (not a slave of a shared mount) and that no path
the processes hold goes through (fds, mappings, exe, cwd, root:
mount_table.held_paths), nor one of `keep` (the directory a group lives in, which it may
open anything in), together with whatever is mounted below it.
Why: the namespace (restore._own_proc's, made for a /proc of the new PID namespace; a
--root group's own is trimmed further by slsfs.rootfs) is a copy of every mount the restorer had. Where mounts are private (no
propagation: this machine, many containers), an unmount on the host does not reach the
copy, and a FUSE file system lives while any mount of it does: another store's daemon
would serve on and its `sls umount` wait (slsfs.mount_namespaces names such copies) for
as long as the restored processes run.

A mount that was shared on the host (systemd makes `/` and what is mounted below it
shared) is a slave in the copy (MS_SLAVE): the host's unmount reaches it, so it stays,
and the processes keep every such file system, as the host sees it.

Simplifications: FUSE mounts only (a copy of a disk or tmpfs mount keeps its file system
alive too, but unmounting it on the host does not wait for that; and the processes may
well open system paths they held nothing of at the checkpoint). A restored process that
later opens a path in a FUSE mount it held nothing of finds the directory below it, as
after an unmount on the host (mounts made on the host after the restore never showed in
its namespace either), if that mount was private; one that held something there keeps
the whole mount.
"""
from __future__ import annotations

from typing import Iterable

from .inject import Injector
from .mount_table import MountTable, held_paths, within

NR_UMOUNT2, MNT_DETACH = 166, 2


def unused_fuse(table: MountTable, keep: Iterable[str]) -> list[int]:
    """The FUSE mounts of `table` that no unmount elsewhere reaches and no path of `keep`
    goes through, none below another (its detach takes those along)."""
    fuse = {m for m, mount in table.mounts.items() if _is_fuse(mount.fstype) and not mount.slave}
    if not fuse:
        return []
    points = {table.mounts[m].point for m in fuse}
    kept = table.kept_for(p for p in keep if any(within(p, point) for point in points))
    unused = fuse - kept
    return [m for m in unused if not (table.chain(table.mounts[m].parent) - {m}) & unused]


def detach_unused_fuse(inj: Injector, pids: list[int], keep: Iterable[str] = ()) -> list[str]:
    """Detach from the mount namespace of `inj` the FUSE mounts that the processes `pids`
    and the paths `keep` do not use (see the module); the points detached."""
    table = MountTable(f"/proc/{inj.tid}/mountinfo")
    keep = list(keep)
    if not unused_fuse(table, keep):    # (the usual group restore: no other store is mounted)
        return []                       # what the processes hold could only keep more
    points = table.detach_points(unused_fuse(table, [*keep, *held_paths(pids)]))
    for point in points:      # (a failure: the mount went meanwhile, with its parent)
        inj.call(NR_UMOUNT2, inj.put(point.encode(errors="surrogateescape") + b"\0"), MNT_DETACH)
    return points


def _is_fuse(fstype: str) -> bool:
    return fstype in ("fuse", "fuseblk") or fstype.startswith("fuse.")
