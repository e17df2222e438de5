"""Where else a mount lives: the copies of a file system in other mount namespaces.

A process that makes a mount namespace of its own (`unshare --mount`, a container, a
systemd service with PrivateTmp) gets a copy of every mount there is. Unless the copy is
a peer or a slave of ours (shared propagation, as systemd sets up `/`; this machine's
mounts are private), an unmount made here does not reach it. A FUSE file system ends only
when its last mount goes, so `fusermount3 -u` of a slsfs mount with such a copy returns
at once while the daemon goes on serving the copy, and its final checkpoint waits for
whoever holds it. `sls umount` looks here to say so while it waits (and with --force
stops the daemon rather than wait).

Simplification: only namespaces that some readable process is in are seen (all of them
for root); one process per namespace is named.
"""
from __future__ import annotations

import os


def copies_elsewhere(device: str) -> list[str]:
    """'PATH (mount namespace of pid N, COMM)' for each mount of file system `device`
    ("major:minor", as /proc/PID/mountinfo gives it) in a mount namespace other than ours
    that an unmount here does not reach."""
    try:
        ours = os.readlink("/proc/self/ns/mnt")
        reached = {tag.replace("shared:", "master:") for _path, tags in _mounts_of(device, "self")
                   for tag in tags if tag.startswith("shared:")}
    except OSError:
        return []
    reached |= {tag.replace("master:", "shared:") for tag in reached}
    seen = {ours}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            namespace = os.readlink(f"/proc/{pid}/ns/mnt")
            if namespace in seen:
                continue
            paths = [path for path, tags in _mounts_of(device, pid) if not tags & reached]
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:                   # gone, or not ours to read
            continue
        seen.add(namespace)
        found += [f"{path} (mount namespace of pid {pid}, {comm})" for path in paths]
    return found


def _mounts_of(device: str, pid: str) -> list[tuple[str, set[str]]]:
    """(mount point, its propagation tags: shared:N, master:N, ...) of each mount of
    `device` in the mount namespace of process `pid`."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return [(fields[4], set(fields[6:fields.index("-")])) for fields in map(str.split, f)
                if fields[2] == device]
