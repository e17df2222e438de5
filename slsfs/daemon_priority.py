"""The group daemon's share of the CPUs on a busy machine: its session's autogroup at a
raised priority.

What: `raise_share()` sets the scheduler autogroup of the daemon's session to nice
AUTOGROUP_NICE (/proc/self/autogroup, sched(7)). The daemon leads a session of its own
(slsfs.daemon_start forks it with setsid); the groups it runs do not share it: each
group's processes run in a session of their own (slsfs.group_process starts them with
start_new_session, a restore's stub likewise), whose autogroup keeps nice 0, and their
own nice values are untouched. A daemon that does not lead its session (started by hand
from a shell) leaves it alone: the change would raise the whole shell session.
Why: the daemon does the application's file system work (it answers every FUSE request)
and takes its checkpoints. A kernel file system does that work in the application's own
time; a FUSE daemon runs in its own session, and with autogroups (one per session, equal
shares between sessions) a busy machine gives it one share among all the sessions that
want a CPU, while the application waits for each answer. Measured (SQLite loop in a group
at 100 Hz, load 5-7 from other work, 2 CPUs; tracefs sched_switch + fuse events): of the
1,343 ms the application spent in FUSE requests that took over 1 ms, the daemon's trio
thread was runnable but NOT running for 820 ms (other sessions' processes held both
CPUs) and running for 201. Checkpoints make the daemon use more than one session's share
(~0.6-0.85 CPU at 100 Hz), so the scheduler held its answers back for its whole lag.
Where autogroups do not apply (a session inside a cgroup other than the root, as systemd
puts services), the cgroup's cpu.weight decides: not changed here.
"""
from __future__ import annotations

import os

AUTOGROUP_NICE = -10      # weight 9548 against 1024 for a session at nice 0
AUTOGROUP = "/proc/self/autogroup"


def raise_share() -> bool:
    """Set this process's session autogroup to AUTOGROUP_NICE when it leads its session;
    whether it did. Without the privilege (CAP_SYS_NICE) or autogroups (a kernel without
    them) the daemon runs on at its share as it is, and says so in its log."""
    if os.getsid(0) != os.getpid():
        return False
    try:
        with open(AUTOGROUP, "w") as f:
            f.write(str(AUTOGROUP_NICE))
    except OSError as exc:
        import logging                   # (here: the fork raises its share before its imports)
        logging.getLogger("slsfs.daemon").info("the daemon's session keeps its CPU share (nice %d of %s: %s)", AUTOGROUP_NICE, AUTOGROUP,
                 exc.strerror)
        return False
    return True
