"""POSIX timers (timer_create): captured with their ids, clock, notification and time
left, and re-armed at restore.

What: `entries(pid)` reads /proc/PID/timers (id, signal, sigev value, notify kind and
thread, clock); the capture then injects timer_gettime (NR_TIMER_GETTIME) for each one's
time left and interval into the frozen process (timers are only visible to their own
process) and `set_time` records them.
`recreate(inj, timers)` makes them again inside the restored process, with their
original ids (prctl PR_TIMER_CREATE_RESTORE_IDS, Linux 6.17+; on older kernels ids are
handed out in order, and a mismatch is a clear error), and arms them.
Why: programs keep timer ids in memory and rely on periodic signals.

Simplifications: overrun counts are not kept; a periodic timer found expired with its
signal still pending restarts with a full period; an expired one-shot timer comes back
disarmed; SIGEV_THREAD_ID timers must target a thread of the same process (as the
kernel requires anyway), so they are created once its threads exist; a kernel built
without CONFIG_CHECKPOINT_RESTORE has no /proc/PID/timers, and timers are then not seen.
"""
from __future__ import annotations

import os
import re
import struct

from . import procfs
from .errors import CheckpointError, ProcessGone
from .inject import Injector

_NR_TIMER_CREATE, _NR_TIMER_SETTIME, NR_TIMER_GETTIME, _NR_PRCTL = 222, 223, 224, 157
PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, RESTORE_IDS_ON = 77, 0, 1
SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD, SIGEV_THREAD_ID = 0, 1, 2, 4
NOTIFY = {"signal": SIGEV_SIGNAL, "none": SIGEV_NONE, "thread": SIGEV_THREAD}
_ENTRY = re.compile(r"ID: (-?\d+)\nsignal: (\d+)/([0-9a-fx]+)\nnotify: (\w+)/(\w+)\.(\d+)\nClockID: (-?\d+)")


def entries(pid: int) -> list[dict]:
    """The timers of a process as /proc/PID/timers lists them: {id, clock, signo, value,
    notify, tid}; the time (`set_time`) needs timer_gettime(id) inside the process."""
    try:
        text = procfs.read_file(f"/proc/{pid}/timers").decode()   # in the stop: no buffered open()
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            raise ProcessGone(f"process {pid} exited while being checkpointed") from None
        return []  # a kernel without CONFIG_CHECKPOINT_RESTORE shows no timers
    timers = []
    for m in _ENTRY.finditer(text):
        notify = NOTIFY[m[4]] | (SIGEV_THREAD_ID if m[5] == "tid" else 0)
        tid = procfs.ns_id(procfs.status(int(m[6]))["NSpid"]) if notify & SIGEV_THREAD_ID else 0
        timers.append({"id": int(m[1]), "clock": int(m[7]), "signo": int(m[2]), "value": int(m[3], 16),
                       "notify": notify, "tid": tid})
    return timers


def set_time(timer: dict, itimerspec: bytes) -> None:
    """Fill in `interval` and `remaining` from timer_gettime's struct itimerspec."""
    interval_s, interval_ns, value_s, value_ns = struct.unpack("4q", itimerspec)
    timer.update(interval=[interval_s, interval_ns], remaining=[value_s, value_ns])


def recreate(inj: Injector, timers: list[dict]) -> None:
    """Create and arm the timers inside the (stopped, restored) process `inj` drives."""
    if not timers:
        return
    exact = inj.call(_NR_PRCTL, PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON, 0, 0, 0) == 0
    for timer in sorted(timers, key=lambda t: t["id"]):
        sigevent = inj.put(struct.pack("QiiI44x", timer["value"], timer["signo"], timer["notify"], timer["tid"]))
        id_ptr = inj.put(struct.pack("i", timer["id"]), 64)
        inj.check(_NR_TIMER_CREATE, timer["clock"], sigevent, id_ptr, what=f"timer_create(id {timer['id']})")
        got = struct.unpack("i", inj.read(id_ptr, 4))[0]
        if got != timer["id"]:
            raise CheckpointError(f"the POSIX timer {timer['id']} came back as timer {got}: this kernel cannot "
                                  "choose timer ids (PR_TIMER_CREATE_RESTORE_IDS needs Linux 6.17 or later)")
        remaining = timer["remaining"] if any(timer["remaining"]) else timer["interval"]
        if any(remaining):
            spec = inj.put(struct.pack("4q", *timer["interval"], *remaining), 96)
            inj.check(_NR_TIMER_SETTIME, timer["id"], 0, spec, 0, what=f"timer_settime({timer['id']})")
    if exact:
        inj.check(_NR_PRCTL, PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, 0, 0, 0, what="prctl(restore ids off)")
