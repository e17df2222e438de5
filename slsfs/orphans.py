"""Group processes left running by a daemon that died alone.

When the daemon is killed and its groups are not (an OOM kill, a crash of slsfs itself),
their processes run on against a dead mount: every file operation fails with ENOTCONN,
nothing of theirs can be checkpointed any more, and a server among them still holds its
port, so restoring the group's last durable checkpoint would fail ("address in use").
What: `stop_orphans(devices)` SIGKILLs the processes that run in a PID namespace of their
own (every group started by `sls run` or restored does) with their working directory or
root on one of the dead mounts (`devices`: their "major:minor"), and waits until they are
gone. Why: the checkpoint is the group's state; the orphaned instance cannot go on.
Who: a daemon starting on the stale mount (`sls restore`, `sls run`), and `sls umount`
or `sls stop` detaching it.

Simplifications: a group adopted with `sls persist` runs in the host's PID namespace and
is left alone (as is any shell of the host that has its working directory there); a
process of a group that moved both its working directory and its root off the mount is
not found (its namespace's init usually is, and takes it along).
"""
from __future__ import annotations

import logging
import os
import signal
import time

from mount import fusectl

log = logging.getLogger("slsfs.daemon")
GONE_WAIT_S = 10.0


def _device_of(pid: int, link: str) -> str | None:
    """The "major:minor" of the file system of /proc/PID/<link>, from the kernel's cached
    attributes (fusectl.device_of): a plain stat asks the dead mount's daemon once its
    cached attributes expire, fails with ENOTCONN, and the orphan went unnoticed."""
    return fusectl.device_of(f"/proc/{pid}/{link}")


def orphans(devices: set[str]) -> list[int]:
    """Processes in a PID namespace of their own whose cwd or root is on one of `devices`."""
    own_namespace = os.readlink("/proc/self/ns/pid")
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == own_namespace:
                continue
        except OSError:
            continue
        if _device_of(pid, "cwd") in devices or _device_of(pid, "root") in devices:
            found.append(pid)
    return found


def stop_orphans(devices: set[str]) -> list[int]:
    """SIGKILL the orphans on `devices` and wait until they have exited; their pids."""
    found = orphans(devices)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if found:
        log.info("stopped processes %s left running by a daemon that died (their mount was dead)", found)
    deadline = time.monotonic() + GONE_WAIT_S
    while time.monotonic() < deadline and any(_running(pid) for pid in found):
        time.sleep(0.02)
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False
