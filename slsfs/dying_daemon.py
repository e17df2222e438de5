"""Free a store whose daemon was SIGKILLed but cannot finish dying.

A daemon killed while one of its group's processes waits in a page fault on the daemon's
own mount (a shared mapping of a file in the volume: PostgreSQL's shared memory under
`sls run --root`, where /dev/shm is the volume's /tmp) can hang in its exit: closing its
write-tracking userfaultfd needs that process's memory lock, the process holds it until
the FUSE request of its page fault is answered or the connection ends, and the kernel
ends the connection only once the daemon has closed /dev/fuse, which comes later in the
same exit. The daemon stays a zombie holding the store's lock and its control socket
(every `sls` command then waits or times out) until someone aborts the connection.

`release(store)` does that: if the process holding the store's lock is dying (killed, or
a zombie whose threads are still exiting), it aborts the FUSE connections of the store's
mounts (their requests fail: the processes that made them are being killed anyway) and
waits for the daemon to be gone.
"""
from __future__ import annotations

import os
import time

from mount.control import slsfs_mounts

SIGKILL_BIT = 1 << 8
GONE_WAIT_S = 10.0


def release(store: str) -> bool:
    """True if a dying daemon held the store and has been let go."""
    holder = lock_holder(store)
    if holder is None or not dying(holder):
        return False
    from mount import fusectl      # (here: its ctypes cost every `sls restore` and `sls ps` ~2-20 ms)
    for mount in slsfs_mounts():
        if os.path.realpath(mount.store) == os.path.realpath(store) and mount.device:
            fusectl.abort_mounted(mount.mountpoint, mount.device)
    deadline = time.monotonic() + GONE_WAIT_S
    while lock_holder(store) == holder and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def lock_holder(store: str) -> int | None:
    """The PID holding the store's writer lock (flock on STORE/lock). The lock file names
    its holder (docs/FORMAT.md, "lock"): that PID if its /proc/PID/fdinfo shows the lock
    held; None if that process is gone (a fork of it may hold the lock on: /proc/locks
    would name the gone PID too); else, as when the file names none (a store last locked
    by an older slsfs) or for a dying process whose first thread has exited (its fdinfo is
    gone, its other threads still hold the files), the PID that /proc/locks shows. Not
    /proc/locks every time: reading it waits for an RCU grace period (5-15 ms), on the path
    of every `sls restore` and `sls ps`."""
    try:
        with open(os.path.join(store, "lock"), "rb") as f:
            named, st = f.read(64).split(), os.fstat(f.fileno())
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    if len(named) == 2 and all(field.isdigit() for field in named):
        pid, fd = map(int, named)
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                if any(_holds(line.split()[1:], wanted) for line in info if line.startswith("lock:")):
                    return pid
        except OSError:
            pass
        if not os.path.exists(f"/proc/{pid}"):
            return None
    with open("/proc/locks") as f:
        return next((int(fields[4]) for fields in (line.split() for line in f) if _holds(fields, wanted)), None)


def _holds(fields: list[str], wanted: str) -> bool:
    """Whether a lock line's fields (as /proc/locks gives them, from the number on) are an
    exclusive flock of the file `wanted` (major:minor:inode, in hex as the kernel prints)."""
    return len(fields) > 5 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == wanted


def dying(pid: int) -> bool:
    """Whether `pid` has a SIGKILL pending or is a zombie whose other threads still exit."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return False
    pending = int(status.get("ShdPnd", "0"), 16) | int(status.get("SigPnd", "0"), 16)
    return status.get("State", "").startswith("Z") or bool(pending & SIGKILL_BIT)
