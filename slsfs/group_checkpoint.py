"""One group checkpoint, end to end (DESIGN.md), and reading an image for restore.

`take(...)` runs in the tracer thread (slsfs.tracer), with every store access sent to
the trio thread (`in_trio`), which owns the store and keeps serving FUSE meanwhile:

  1. freeze every task of the group's process tree (ptrace);
  2. syncfs the mount (the kernel writes back dirty pages; the trio thread answers);
  3. seal the file system and pin the volume's root at this instant;
  4. capture the processes: pages and metadata go into a new image (one call into
     the trio thread per run of pages), then name the image and the pinned volume root
     in the `grp/<name>` record and commit (not yet durable): this commit's volume root
     is the file system of the frozen instant, so `.sls/checkpoints/<id>/fs` shows it;
  5. thaw.
The caller then makes the commit durable (fsync) while the application runs. A crash
before that leaves the previous durable group checkpoint intact.

Simplification: pages are hashed and stored while the group is stopped (no COW copy
after the thaw), so the stop time grows with the memory the group has dirtied.
"""
from __future__ import annotations

import ctypes
import os
import time
from typing import Any, Callable, Iterator

from objectstore import ChunkId, Store

from checkpointer import freeze
from checkpointer.capture import capture_all
from checkpointer.files import FileCapture
from checkpointer.image import ImageWriter, StoredImage

InTrio = Callable[..., Any]
_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(mountpoint: str) -> None:
    """syncfs(2) through ctypes, which lets go of the GIL: the trio thread must answer
    the write-back requests meanwhile."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of {mountpoint}: {os.strerror(err)}")
    finally:
        os.close(fd)


def take(pids: list[int], mountpoint: str, store: Store, in_trio: InTrio,
         seal_and_pin: Callable[[], ChunkId],
         record: Callable[[ChunkId, ChunkId, list[dict]], int]) -> tuple[int, float]:
    """Steps 1-5 above; `record(image, fs_root, processes)` runs in the trio thread while
    the group is still frozen and returns the (not yet durable) commit id.
    Returns (commit id, stop time in ms)."""
    started = time.perf_counter()
    with freeze(pids, tree=True) as frozen:
        syncfs(mountpoint)
        fs_root = in_trio(seal_and_pin)
        writer = in_trio(ImageWriter, store)
        files = FileCapture(lambda data: in_trio(writer.add_blob, data))
        processes = capture_all(frozen, lambda pid, addr, data: in_trio(writer.add_pages, pid, addr, data),
                                files)
        frozen.check_alive()
        image = in_trio(writer.finish, processes, files.files)
        commit = in_trio(record, image, fs_root, processes)
    return commit, (time.perf_counter() - started) * 1000


class LoadedImage:
    """A stored image for restore in the tracer thread: pages read into memory up front
    (in the trio thread), blobs fetched through the trio thread on demand."""

    def __init__(self, store: Store, root: ChunkId, in_trio: InTrio) -> None:
        self._stored = StoredImage(store, root)
        self._in_trio = in_trio
        self.processes: list[dict] = self._stored.processes
        self.files: list[dict] = self._stored.files
        self._runs = {p["pid"]: list(self._stored.page_runs(p["pid"]))
                      for p in self.processes if not p.get("zombie")}

    def page_runs(self, pid: int) -> Iterator[tuple[int, bytes]]:
        return iter(self._runs.get(pid, []))

    def read_blob(self, ids: list[str]) -> bytes:
        return self._in_trio(self._stored.read_blob, ids)
