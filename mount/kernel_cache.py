"""Telling the kernel to forget what it cached of this mount, after changes it did not see.

The kernel caches attributes, directory entries and file pages (mount.operations says for
how long). A few changes reach the daemon without the kernel updating its cache itself:
a drop of set-ID bits by a write (attributes), a clone grafted by `sls clone` (an entry),
an O_DIRECT write submitted asynchronously (the pages a buffered reader cached while it
was in flight: Operations.write). These functions send the kernel's notifications.

An invalidation of entries or pages waits for the kernel's locks on what it drops: a
directory with a request pending, a page being read or written back. Only the thread
that serves requests can answer those requests, so such an invalidation runs in a helper
thread that the caller waits for a bounded time: it takes tens of microseconds when
nothing is pending, and otherwise completes once the serving thread has answered.
"""
from __future__ import annotations

import threading
from typing import Callable

import pyfuse3

FORGET_ENTRY_WAIT_S = 0.5       # `sls clone`: rare, worth waiting for
DROP_PAGES_WAIT_S = 0.02        # a direct write: blocked only by requests queued behind it


def forget_attributes(kino: int) -> None:
    """Tell the kernel that the attributes it holds of inode `kino` are stale; its next
    stat asks again. Attributes only: the kernel takes no lock for it, so a request
    handler may call it."""
    _send(lambda: pyfuse3.invalidate_inode(kino, attr_only=True))


def forget_entry(parent_kino: int, name: bytes) -> None:
    """Make the kernel forget what it knows of entry `name` in directory `parent_kino`
    (e.g. that it is absent) and the directory's attributes (its times and link count),
    waiting at most FORGET_ENTRY_WAIT_S (it completes later otherwise)."""
    _in_helper_thread(FORGET_ENTRY_WAIT_S, lambda: pyfuse3.invalidate_entry(parent_kino, name),
                             lambda: pyfuse3.invalidate_inode(parent_kino, attr_only=True))


def drop_cached_pages(kino: int) -> None:
    """Make the kernel drop the pages (and attributes) it caches of file `kino`, so that
    its next buffered read asks the daemon, waiting at most DROP_PAGES_WAIT_S: a page
    being read by a request queued behind the caller's keeps it waiting until the serving
    thread answers that request (whose reply then holds the new data anyway)."""
    _in_helper_thread(DROP_PAGES_WAIT_S, lambda: pyfuse3.invalidate_inode(kino, attr_only=False))


def _in_helper_thread(wait_s: float, *notifications: Callable[[], None]) -> bool:
    """Send `notifications` in order from a new thread; whether it finished within `wait_s`."""
    helper = threading.Thread(target=lambda: [_send(n) for n in notifications],
                              name="slsfs-invalidate", daemon=True)
    helper.start()
    helper.join(wait_s)
    return not helper.is_alive()


def _send(notification: Callable[[], None]) -> None:
    try:
        notification()
    except OSError:             # ENOENT: the kernel holds nothing of it
        pass
