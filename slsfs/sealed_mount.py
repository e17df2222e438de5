"""The daemon's mount as the seal of a group checkpoint sees it (the file-system side of
group_checkpoint.Seal: its `SealedFiles`), over mount.FileSystem and the store.

Why a class of its own: the seal needs six things of the mount, asked from two threads
(the tracer thread at the freeze, the trio thread after it); named methods say which is
which, where the seal used to take eight loose callables.
"""
from __future__ import annotations

from typing import Any

from objectstore import ChunkId, NotFound, Store
from mount.filesystem import FileSystem, SyncRequest
from mount.history import VOLUME_PREFIX

from . import groups


class SealedMount:
    """`fs` (serving the volume of the group checkpoint `label`s names, e.g. "group app #7")
    for one seal: group_checkpoint.SealedFiles."""

    def __init__(self, fs: FileSystem, store: Store, label: str) -> None:
        self.fs, self.store, self.label = fs, store, label

    def syncfs_needed(self) -> bool:
        return self.fs.syncfs_needed()

    def request_sync(self) -> SyncRequest | None:
        return self.fs.request_kernel_sync()

    def synced_now(self, request: Any) -> bool:
        return self.fs.kernel_sync_done(request)

    async def sync(self, request: Any) -> None:
        await self.fs.sync_kernel_cache(request)

    def commit_files(self) -> tuple[int, ChunkId]:
        """In the trio thread, the group frozen: the file system of this instant, committed."""
        commit = self.fs.checkpoint(f"{self.label}{groups.FILES_LABEL_END}", durable=False)
        return commit.id, commit.roots[VOLUME_PREFIX + self.fs.volume_name]

    def files_unchanged(self) -> tuple[int, ChunkId] | None:
        """In the trio thread after the syncfs, or in the tracer thread when no syncfs is
        needed (group_checkpoint.Seal.start), the group frozen: the commit that holds
        the file system (the one its last files commit made, `FileSystem.committed`) and its
        volume root when nothing changed since, so that the group checkpoint names it
        instead of committing the same tree again (that needs the trio thread: 0.4-11 ms of
        a Redis stop); else None. Not the newest commit: that is mostly the previous group
        checkpoint's own, which retention would then keep as a files commit only, without
        the files commit its record names (a checkpoint in `sls log` that `restore --clone
        --at` refused). Read without the trio thread's help: a change it is making
        meanwhile (another process's write) makes the answer None, or leaves the frozen
        group's files as they are in either commit."""
        try:
            if self.fs.dirty:
                return None
            committed = self.fs.committed      # (set before the file system is marked clean)
            if committed is None:
                return None
            self.store.commit_by_id(committed.id)          # not thinned since
            root = committed.roots.get(VOLUME_PREFIX + self.fs.volume_name)
            return None if root is None or self.fs.dirty else (committed.id, root)
        except (RuntimeError, NotFound):   # the volume table changed size while read: ask the trio thread
            return None
