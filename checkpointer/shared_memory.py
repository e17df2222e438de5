"""Incremental capture of shared anonymous memory: only the pieces written since the last checkpoint.

What: `SharedMemoryTracking`, kept by `Incremental` across checkpoints, follows every shared
anonymous mapping (MAP_SHARED|MAP_ANONYMOUS, and the memfd a restore makes of one). Each
process's DirtyTracker write-protects its writable mappings of such memory in its
userfaultfd (WP_ASYNC), as it does its private memory; `scan()`, at the start of a freeze
window, asks every mapping (PAGEMAP_SCAN, which re-protects) which pages were written and
turns them into pieces of the object (file offset // PIECE). `contents()` then gives the
object's blob ids: the previous checkpoint's, with the written pieces read again, when
nothing can have been missed; else the whole object, read as before.
Why: a database's shared buffers (PostgreSQL: 142 MiB, tens of MiB touched) were read,
hashed and stored whole inside every stop (75 ms of a 113 ms stop at 10 Hz); a checkpoint
now reads the few 64 KiB pieces written since the last one.

Nothing can have been missed when, since the previous checkpoint: the same mappings (process,
range, protection, offset) map the object, each writable one was write-protected then (a
process that exec()ed, exited or remapped has writes that no scan sees); none of their
processes forked (forks.py: a child may have written and exited since; a child outside the
captured processes is watched as long as it maps the object); and the object's size is
unchanged and it has no fewer blocks (a hole punched by MADV_REMOVE or fallocate frees
some; a page allocated since was written, and so scanned, or reads as zeros; its mtime is
no witness: a write through a mapping changes it too). Anything else, or a window that
did not end in `commit()` (a failed checkpoint: its scan re-protected pages that no image
holds), reads the object whole.

Simplifications: only shared anonymous memory, which is shared by inheritance alone, is
followed: a memfd, a POSIX or SysV segment can be mapped by a process outside the image,
whose writes no scan of ours sees, so they are still read whole at every checkpoint. A
process outside the image that maps the same shared anonymous memory (a child that left the
captured tree before the watch began; a debugger writing through /proc/PID/map_files) is
not seen either, nor is a hole punched by MADV_REMOVE when as many pages were allocated
between the same two checkpoints. Without the process events connector (not root) every
object is read whole.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from . import procfs
from .capture import vma_kind
from .errors import ProcessGone
from .forks import ForkWatch

if TYPE_CHECKING:
    from .incremental import DirtyTracker

PIECE = 64 << 10    # the unit read again when written: a few pages, and few blob ids per MiB
RESTORED_SHARED_ANON = "/memfd:shared-anon" + procfs.DELETED   # what a restore maps it as

Key = tuple[int, str]       # (inode, path in maps) of a shared memory object
Mapping = tuple[int, tuple]  # (host pid, VMA signature) of one mapping of it


def followed(vma: procfs.Vma) -> bool:
    """Whether this mapping's object is followed (shared anonymous memory)."""
    return vma.shared and (vma.path == RESTORED_SHARED_ANON or vma_kind(vma) == "shared_anon")


@dataclass
class _Seen:
    """What the scan of one freeze window found of one object."""
    mappings: set[Mapping] = field(default_factory=set)
    written: set[int] = field(default_factory=set)      # pieces written since the last scan
    unprotected: bool = False   # a writable mapping of it was not write-protected


@dataclass
class _Contents:
    """An object as the last committed checkpoint stored it."""
    mappings: frozenset[Mapping]
    stamp: tuple[int, int]          # size and blocks allocated
    pieces: list[list[str]]         # blob ids of each PIECE


class SharedMemoryTracking:
    """The shared anonymous memory of a set of processes, across their checkpoints."""

    def __init__(self) -> None:
        self._last: dict[Key, _Contents] = {}
        self._window: dict[Key, _Seen] | None = None
        self._captured: dict[Key, _Contents] = {}
        self._forks: ForkWatch | None = None
        self._outside: set[int] = set()   # processes forked from captured ones, not captured
        self.pieces_read = 0        # by the last window: read again, or in a whole read

    def scan(self, trackers: dict[int, "DirtyTracker"]) -> None:
        """At the start of a freeze window: what each followed object's mappings wrote."""
        if self._window is not None:    # the last window failed after its scan
            self._last.clear()
        self._window, self._captured, self.pieces_read = {}, {}, 0
        for pid, tracker in trackers.items():
            for vma in procfs.maps(pid):
                if not followed(vma):
                    continue
                seen = self._window.setdefault((vma.inode, vma.path), _Seen())
                seen.mappings.add((pid, vma.signature))
                pages = tracker.written_shared(vma)
                if pages is None:
                    seen.unprotected |= "w" in vma.perms
                    continue
                seen.written.update((vma.offset + page - vma.start) // PIECE for page in pages)
        self._unseen_writers(set(trackers))

    def _unseen_writers(self, captured: set[int]) -> None:
        """Mark unprotected each object that a process no scan sees may have written since
        the last checkpoint: a child forked by one of its mappers (it may have written and
        exited since), and while it lives, one outside the captured processes."""
        if not self._window:
            return
        if self._forks is None:
            self._forks = ForkWatch()   # from now on: this window reads every object whole anyway
        forked = self._forks.forks()
        if forked is None:
            for seen in self._window.values():
                seen.unprotected = True
            return
        self._outside |= {child for child, parent in forked.items()
                          if child not in captured and (parent in captured or parent in self._outside)}
        writers = set(forked.values())
        for pid in list(self._outside):
            try:
                keys = {(vma.inode, vma.path) for vma in procfs.maps(pid) if followed(vma)}
            except (ProcessGone, OSError):
                keys = set()
            for key in keys & self._window.keys():
                self._window[key].unprotected = True
            if not keys:
                self._outside.discard(pid)      # gone, or exec()ed: it maps none of them
        for seen in self._window.values():
            if any(pid in writers for pid, _ in seen.mappings):
                seen.unprotected = True

    def contents(self, key: Key, source: str, read_whole: Callable[[int], list[list[str]]],
                 read_piece: Callable[[bytes], list[str]], keep: Callable[[list[str]], None]) -> list[str] | None:
        """The blob ids of a followed object's contents (None: not followed in this window),
        read from `source`: the pieces written since the last checkpoint (`read_piece` names
        one), or all of it (`read_whole(PIECE)` names each piece); `keep` is told the ids
        taken over from the last checkpoint, which this image must keep alive too."""
        if self._window is None or key not in self._window:
            return None
        if key in self._captured:
            return [i for piece in self._captured[key].pieces for i in piece]
        seen, last = self._window[key], self._last.get(key)
        with open(source, "rb", buffering=0) as fh:
            st = os.fstat(fh.fileno())
            stamp = (st.st_size, st.st_blocks)
            if (last is None or seen.unprotected or last.mappings != seen.mappings or stamp[0] != last.stamp[0]
                    or stamp[1] < last.stamp[1]):
                pieces = read_whole(PIECE)
                self.pieces_read += len(pieces)
            else:
                pieces = list(last.pieces)
                for index in sorted(seen.written):
                    if index < len(pieces):
                        pieces[index] = read_piece(os.pread(fh.fileno(), PIECE, index * PIECE))
                self.pieces_read += len(seen.written)
                keep([i for index, piece in enumerate(pieces) if index not in seen.written for i in piece])
        self._captured[key] = _Contents(frozenset(seen.mappings), stamp, pieces)
        return [i for piece in pieces for i in piece]

    def commit(self) -> None:
        """The window's capture is whole and its mappings are write-protected from now on."""
        self._last, self._captured, self._window = self._captured, {}, None

    def clear(self) -> None:
        """Forget everything: the next capture reads every object whole."""
        self._last, self._captured, self._window = {}, {}, None
        if self._forks is not None:
            self._forks.close()
            self._forks = None
