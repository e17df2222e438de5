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
from pathlib import Path

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
    """The PID holding the store's writer lock (flock on STORE/lock), from /proc/locks."""
    try:
        st = os.stat(os.path.join(store, "lock"))
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        for fields in (line.split() for line in f):
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted:
                return int(fields[4])
    return None


def dying(pid: int) -> bool:
    """Whether `pid` has a SIGKILL pending or is a zombie whose other threads still exit."""
    try:
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
    except OSError:
        return False
    pending = int(status.get("ShdPnd", "0"), 16) | int(status.get("SigPnd", "0"), 16)
    return status.get("State", "").startswith("Z") or bool(pending & SIGKILL_BIT)
