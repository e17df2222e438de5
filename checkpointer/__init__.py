"""checkpointer: capture running Linux processes into the object store and restore them.

The API (for the persistence-group daemon and the `sls` CLI)::

    from checkpointer import freeze, capture, checkpoint, restore, load_image

    # 1. the freeze window, split out so the daemon can syncfs + seal the mount inside it
    with freeze([pid, ...], tree=True) as frozen:  # every thread of the tree stopped, thawed on exit
        ...                                     # syncfs / seal the file system here
        root = capture(frozen, store)           # image tree root (ChunkId); not yet named/committed
    store.set_root("img/" + name, root); store.commit(label)

    # or all in one: freeze, capture, thaw, name "img/<name>", commit
    commit = checkpoint([pid], store, name, tree=True, leave_stopped=False, durable=True)
    # a whole PID namespace: checkpoint its PID 1 with tree=True; it is restored as PID 1
    # of a new namespace

    # successive checkpoints that store only the pages written since the previous one
    inc = Incremental()                         # keep it across checkpoints of the same processes
    with freeze(pids, tree=True) as frozen:
        root = inc.capture(frozen, store)       # full the first time; each image is complete
    inc.last_pages                              # pages the last capture stored
    # shorter stop: inside the window only metadata + a fork snapshot; pages copied after the thaw
    with freeze(pids, tree=True) as frozen:
        pending = inc.capture_snapshot(frozen, store)
    root = pending.complete()                   # copies from the snapshot, reaps it, returns the root
    inc.close()                                 # when the processes are no longer checkpointed

    # 2. restore: a new PID namespace by default (original PIDs kept via clone3 set_tid)
    restored = restore(store, name_or_root, new_pid_namespace=True,
                       remap={"/old/mount": "/new/mount"}, leave_stopped=False)
    restored.pids      # host PIDs of the restored processes (parents first)
    restored.wait()    # until they have all exited;  restored.kill() ends the whole tree
    # lazy=True: private anonymous memory is served on first touch by a page server
    # (a forked child), which pushes the rest in the background and exits when all is in;
    # lazy=None (as `sls restore` does): lazily from LAZY_FROM_BYTES of pages on
    restored.wait_pages_in(timeout)   # True once it has (checkpoint it only after that)
    # lower level: checkpointer.restore.restore(image_source, ...) takes any object with
    # .processes, .files, .page_runs(pid) and .read_blob(ids) (see restore.ImageSource)

    load_image(store, name_or_root).processes   # the metadata (docs/FORMAT.md, "Process images")

Rules: call everything from one thread (ptrace requires the attaching thread to do
every later call). Errors are CheckpointError (ProcessGone if a process vanished:
no image is written; Unsupported names state that cannot be captured).

Simplifications today: fds may be regular files, directories, /dev/null & co,
pseudo-terminals whose master is in the image (a new pair with the same settings; the
session leader's controlling terminal), consoles and serial ttys (opened again by path),
other ttys (reattached to /dev/null), pipes, FIFOs
and Unix socket pairs (with their data), memfds and deleted files (also mapped), eventfd,
signalfd, timerfd, epoll and files unlinked while open, with their flock/POSIX/OFD locks;
TCP/UDP/Unix sockets that listen or are bound (recreated on the same address), and
connections to peers outside the image (restored closed, with a warning, like CRIU's
--tcp-close; resumed when the checkpoint killed the processes: checkpoint(kill=True)); POSIX timers keep their ids; inotify instances (same watch descriptors) and
SysV shared memory segments (same ids). Unlinked FIFOs, raw sockets, fanotify and fds in
flight over Unix sockets are refused with a clear error. File contents are not in the image (the
slsfs mount provides them).
"""
from __future__ import annotations

import os
import signal
import sys
import time
import types
from typing import TYPE_CHECKING

from objectstore import ChunkId, Commit, NotFound, Store

from . import procfs

from .errors import CheckpointError, ProcessGone, Unsupported
from .freeze import Frozen, freeze
from .image import ImageWriter, StoredImage, image_root_name, images
from .kernel import PAGE_SIZE
from .restore import Restored
from .restore import restore as restore_source

if TYPE_CHECKING:
    from .files import FileCapture
    from .incremental import Incremental

# The capture side (capture.py, files.py's capture, incremental.py and what they import)
# is imported where first used, not here: a restore needs none of it, and a group
# daemon restoring after a crash imports this package on its way to running the
# application (see slsfs.daemon). `Incremental` and `FileCapture` are still names of
# the package (__getattr__).
_LAZY = {"Incremental": "incremental", "FileCapture": "files", "capture_all": "capture"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """This package, whose function `capture` has the name of its submodule capture.py.
    Imported after the function is defined (lazily), the submodule would replace it as
    the package's attribute (the import system sets it); the function keeps the name,
    as it did when the submodule was imported first, here."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "capture" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["freeze", "capture", "checkpoint", "restore", "load_image", "images", "Frozen", "Restored",
           "Incremental", "LAZY_FROM_BYTES",
           "StoredImage", "CheckpointError", "ProcessGone", "Unsupported"]


def capture(frozen: Frozen, store: Store) -> ChunkId:
    """Capture every frozen process into one new image; returns its root (not committed)."""
    from .files import FileCapture
    writer = ImageWriter(store)
    return _capture(frozen, writer, FileCapture(writer.add_blob))


def _capture(frozen: Frozen, writer: ImageWriter, files: FileCapture) -> ChunkId:
    from .capture import capture_all
    processes = capture_all(frozen, writer.add_pages, files)
    frozen.check_alive()
    return writer.finish(processes, files.files)


def checkpoint(pids: list[int], store: Store, name: str, *, tree: bool = False, label: str | None = None,
               leave_stopped: bool = False, durable: bool = True, kill: bool = False,
               hold_s: float | None = None) -> Commit:
    """Freeze (with `tree`: the pids and all their descendants), capture, thaw; name the
    image "img/<name>" and commit it.

    `kill`: instead of the thaw, SIGKILL the processes once the image is durable (CRIU's
    dump, for a move or a restart from the image): their TCP connections to peers outside
    the image are then in the image too, and die silently (tcp_repair.hold), so that a
    restore resumes them while the peers wait. If one of them received bytes after its
    state was read, the processes are left running and CheckpointError says so (the image
    is written all the same: restoring it would not resume that connection). The
    connections wait `hold_s` seconds (None: an hour) for the restore; then their peers
    are reset."""
    root_name = image_root_name(name)
    label = label or f"checkpoint {name}: pid {' '.join(map(str, pids))}"
    if not kill:
        with freeze(pids, tree=tree, leave_stopped=leave_stopped) as frozen:
            root = capture(frozen, store)
        store.set_root(root_name, root)
        return store.commit(label, durable=durable)
    from .files import FileCapture
    with freeze(pids, tree=tree) as frozen:
        writer = ImageWriter(store)
        files = FileCapture(writer.add_blob, hold_connections=True)
        killed = False
        try:
            store.set_root(root_name, _capture(frozen, writer, files))
            commit = store.commit(label, durable=True)
            if moved := files.connections_moved():
                raise CheckpointError(f"image {name!r} is written, but the processes were left running: the TCP "
                                      f"connection(s) {', '.join(moved)} received bytes after their state was "
                                      "read (a restore would not resume them); checkpoint again")
            _kill(frozen)
            killed = True
        finally:
            files.release_connections(killed, hold_s)
    return commit


KILL_WAIT_S = 10.0


def _kill(frozen: Frozen) -> None:
    """SIGKILL every frozen process and wait until all their threads have exited (their
    files closed); the thaw then only collects them."""
    for pid in frozen.processes:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    for pid in frozen.processes:
        while not all(map(_dead, _tids(pid))):
            if time.monotonic() > deadline:
                raise CheckpointError(f"process {pid} was killed but has not exited after {KILL_WAIT_S:.0f} s")
            time.sleep(0.001)


def _dead(tid: int) -> bool:
    try:
        return procfs.stat_fields(tid)[2] in ("Z", "X")
    except ProcessGone:
        return True


def _tids(pid: int) -> list[int]:
    try:
        return procfs.tids(pid)
    except ProcessGone:
        return []


def load_image(store: Store, image: str | bytes) -> StoredImage:
    """An image by name (as in the store's working roots) or by root id."""
    if isinstance(image, str):
        found = images(store)
        if image not in found:
            raise NotFound(f"no process image named {image!r} in this store "
                           f"(images: {', '.join(sorted(found)) or 'none'})")
        return StoredImage(store, found[image])
    return StoredImage(store, image)


# `restore(lazy=None)` restores lazily an image holding at least this much memory in pages.
# Measured from a restorer that holds nothing else (`sls restore IMAGE`), until the process
# runs, 8 runs each, interleaved (load 4, 2026-12-02): 4 MiB eager 45.1 ms, lazy 54.5 (lazy
# lower in 3 of 8); 8 MiB 48.5 vs 39.1 (5 of 8); 16 MiB 48.2 vs 22.9 (8 of 8). Lazy's fixed
# cost is the page server's fork and arming; eager's grows with the pages it writes.
LAZY_FROM_BYTES = 8 << 20


def restore(store: Store, image: str | bytes, *, new_pid_namespace: bool = True,
            remap: dict[str, str] | None = None, leave_stopped: bool = False,
            lazy: bool | None = False) -> Restored:
    """Restore an image (name or root id); see restore.restore for the options. `lazy=None`:
    lazily if the image holds at least LAZY_FROM_BYTES of pages (`Restored.page_server`
    tells which was done)."""
    source = load_image(store, image)
    if lazy is None:
        lazy = source.holds_pages(LAZY_FROM_BYTES // PAGE_SIZE)
    return restore_source(source, new_pid_namespace=new_pid_namespace, remap=remap,
                          leave_stopped=leave_stopped, lazy=lazy)
