"""The command's side of taking `sls mount`'s mount over for persistence groups.

`sls run` and `sls restore` need the store's group daemon (slsfs.daemon), but `sls mount`
may serve the store with a plain mount daemon (slsfs.mount_daemon), which runs no groups.
`take_over_plain_mount` finds that daemon and, when it serves that one mount alone,
returns a `HandOver`: started like a new daemon (daemon_start's DaemonStart.start), it asks
the mount daemon to become the group daemon in the same process (control op `hand_over`,
docs/FORMAT.md), then waits until that one serves. A daemon serving several mounts, or one
in the foreground, is unmounted instead and a new daemon started, as before the hand-over.

The group daemon says when it serves (or why it failed) with its ready line, as a new one
does (slsfs.daemon_ready): the mount daemon opens the command's pipe through /proc
(`hand_over`'s `ready`) and gives it to the group daemon as its --ready-fd. A mount daemon
older than that answers without `ready`; the command then polls the control socket every
HAND_OVER_POLL_S until the group daemon answers `ps`.
"""
from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

from mount.control import ControlError, mount_state, request, slsfs_mounts

from . import dying_daemon
from .cli import CommandError
from .daemon_ready import LOG_NAME, parse_ready_line, read_line
from .daemon_start import DAEMON_START_TIMEOUT_S, end_unstarted, refusal, take


class HandOver:
    """`sls mount`'s daemon of a store (`pid`, serving `mountpoint` alone) to become the
    store's group daemon in place (slsfs.mount_daemon): `start` as DaemonStart.start."""

    def __init__(self, pid: int, mountpoint: str, check: Callable[[], None] | None) -> None:
        self.pid, self.mountpoint, self.check = pid, mountpoint, check

    def start(self, store: str, *args: str) -> dict | None:
        """Ask the daemon to hand over to a group daemon run with `args`, then wait until
        that one serves; its `ps` reply. A daemon in the foreground (`sls mount
        --foreground`) does not: it is unmounted (after `check`: see take_over_plain_mount)
        and a new daemon started, as before."""
        end_unstarted()                      # (a daemon to be, importing on the other CPU)
        ready_read, ready_write = os.pipe()
        try:
            try:
                reply = request(store, "hand_over", args=[*args, "--command-pid", str(os.getpid())],
                                ready=f"/proc/{os.getpid()}/fd/{ready_write}")
            except ControlError as exc:
                if "unknown request" not in str(exc):
                    raise CommandError(str(exc)) from None
                if self.check is not None:
                    self.check()
                from .fs_commands import unmount
                unmount(self.mountpoint, busy_hint=_TAKE_OVER_BUSY_HINT.format(mountpoint=self.mountpoint))
                return take().start(store, *args)
            finally:
                os.close(ready_write)            # (the daemon holds its own copy now)
            if not reply.get("ready"):           # a mount daemon older than the ready line
                return _until_group_daemon_serves(store, self.pid)
            message = _ready_line_of(self.pid, ready_read)
        finally:
            os.close(ready_read)
        serving, status = parse_ready_line(message)
        if not serving:
            raise refusal(message, os.path.join(store, LOG_NAME))
        return status


def _ready_line_of(pid: int, ready: int) -> str:
    """The ready line the group daemon that process `pid` becomes writes to `ready`, or
    "" if the process ends first (a process it forked may hold the pipe's other end
    still, so the end of the pipe does not tell)."""
    pidfd = os.pidfd_open(pid)
    try:
        readable = select.select([ready, pidfd], [], [], DAEMON_START_TIMEOUT_S)[0]
    finally:
        os.close(pidfd)
    return read_line(ready, DAEMON_START_TIMEOUT_S if ready in readable else 0)


_TAKE_OVER_BUSY_HINT = ("and the slsfs daemon must take this `sls mount` over to run groups: close these "
                        "first (or `sls umount --force {mountpoint}`)")


def _until_group_daemon_serves(store: str, pid: int) -> dict:
    """The `ps` reply of the group daemon that process `pid` becomes (slsfs.mount_daemon's
    hand-over: it unmounts, then mounts and restores as a group daemon, then listens);
    CommandError if the process ends first."""
    pidfd = os.pidfd_open(pid)
    try:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                return request(store, "ps", timeout=DAEMON_START_TIMEOUT_S)
            except ControlError as exc:      # still the mount daemon, or between the two
                if not any(s in str(exc) for s in ("unknown request", "no mount daemon", "closed the connection")):
                    raise CommandError(str(exc)) from None
            if select.select([pidfd], [], [], HAND_OVER_POLL_S)[0]:
                raise CommandError(f"the slsfs daemon did not start (see {store}/{LOG_NAME})")
    finally:
        os.close(pidfd)
    raise CommandError(f"the slsfs daemon did not answer in {DAEMON_START_TIMEOUT_S:.0f} s (see {store}/{LOG_NAME})")


HAND_OVER_POLL_S = 0.003


def take_over_plain_mount(store: str, check: Callable[[], None] | None = None, busy_hint: str | None = None,
                          ) -> tuple[str, str, HandOver | None] | None:
    """If `sls mount` serves the store (a mount daemon runs no groups), take that mount over
    so that a slsfs daemon serves the same volume at the same place; returns that (mount
    point, volume, and the daemon's HandOver: it becomes the group daemon when started,
    having checked the group the command names first; None when it serves other mounts
    too (a stale mount of the store, left by a group daemon that crashed, is none of its): then it has been unmounted here, after `check`, which raises what the daemon would
    refuse (an unknown group), so that a typo costs the user no mount: validate, then act).
    Refuses, with the list, while files are open there (saying `busy_hint`, or that they
    must be closed first)."""
    dying_daemon.release(store)
    try:
        request(store, "ps", timeout=30)
        return None
    except ControlError as exc:
        if "unknown request" not in str(exc):
            return None                       # no daemon at all, or one daemon_status reports
    try:
        status = request(store, "status", timeout=30)
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    mounts = [m for m in slsfs_mounts() if os.path.realpath(m.store) == os.path.realpath(store)
              and mount_state(m.mountpoint) == "live"]       # not a stale one a crashed daemon left
    mountpoint = mounts[0].mountpoint if mounts else None
    if mountpoint is None:
        raise CommandError(f"the `sls mount` daemon of {store} answers but its mount point is not in "
                           "/proc/self/mountinfo; stop it and try again")
    busy_hint = busy_hint or _TAKE_OVER_BUSY_HINT.format(mountpoint=mountpoint)
    if len(mounts) == 1:                      # it hands over as it unmounts: refuse while busy, as umount does
        from .mount_users import refuse_while_busy
        refuse_while_busy(mountpoint, status["pid"], busy_hint)
        return mountpoint, status["volume"], HandOver(status["pid"], mountpoint, check)
    if check is not None:
        check()
    from .fs_commands import unmount      # (here: the file-system verbs' imports cost ~25-40 ms)
    unmount(mountpoint, busy_hint=busy_hint)
    return mountpoint, status["volume"], None
