"""Keep a withdrawn FUSE request from freezing the whole daemon.

pyfuse3 waits until /dev/fuse is readable, then reads it with a blocking read while
holding the GIL. If the request that made it readable is withdrawn in between (its
process was killed: the kernel drops a request it has not handed out yet), that read
blocks until some other request comes, and with it every thread of the daemon: the
control socket, the checkpoints, even the stop watchdog (no other Python thread can
take the GIL). This was seen as `sls stop` hanging after a group's processes were
killed.

`interrupting_reads()` arms a POSIX timer that sends a signal to the serving thread a
few times a second. The signal ends such a read with EINTR (Python handlers are
installed without SA_RESTART), which pyfuse3 answers by waiting for readability again;
at any other moment it costs one no-op handler call.

Simplification: Python only lets the main thread install signal handlers, so a file
system served from another thread (tests that mount in-process) goes without.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

WAKEUP_SIGNAL = signal.SIGRTMIN + 1
INTERVAL_S = 0.2

_CLOCK_MONOTONIC = 1
_SIGEV_THREAD_ID = 4
_libc = ctypes.CDLL(None, use_errno=True)


class _SigEvent(ctypes.Structure):
    """struct sigevent (x86-64): value, signo, notify, then the union whose first int is the tid."""
    _fields_ = [("value", ctypes.c_uint64), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("tid", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval_s", ctypes.c_long), ("interval_ns", ctypes.c_long),
                ("value_s", ctypes.c_long), ("value_ns", ctypes.c_long)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@contextmanager
def interrupting_reads() -> Iterator[None]:
    """While inside: the calling (main) thread gets WAKEUP_SIGNAL every INTERVAL_S."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(WAKEUP_SIGNAL, lambda signum, frame: None)
    event = _SigEvent(signo=WAKEUP_SIGNAL, notify=_SIGEV_THREAD_ID, tid=threading.get_native_id())
    timer = ctypes.c_void_p()
    _check(_libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)), "timer_create")
    try:
        seconds, fraction = divmod(INTERVAL_S, 1)
        nanos = int(fraction * 1e9)
        spec = _ITimerSpec(int(seconds), nanos, int(seconds), nanos)
        _check(_libc.timer_settime(timer, 0, ctypes.byref(spec), None), "timer_settime")
        yield
    finally:
        _libc.timer_delete(timer)
        signal.signal(WAKEUP_SIGNAL, previous)
