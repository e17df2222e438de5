"""`DurablePoints`: which commit last took in a change of each inode of a volume, so that
an fsync of a file whose changes are all durable already makes no commit and waits for
no disk.

An application's fsync (mount.filesystem FileSystem.make_durable) commits the whole file
system and fsyncs the store. Before, it returned at once only when nothing at all had
changed since the last durable commit; with several writers, the fsync of a file that
nothing changed since an earlier durable commit (its bytes rode on another file's fsync,
or on a periodic checkpoint made durable since) still committed the other files' changes
and waited for the disk. A journaling file system answers such an fsync at once; so does
this now: the fsyncs of concurrent writers are grouped in the commit of whichever came
first, and the others find their files durable.

A change of an inode goes through Volume.mark (its data, its record, and for a directory
its entries: every entry change touches the directory's times). Volume.seal moves the
marked inodes into the tree (`sealed`); the next commit holds them (`committed`, from
FileSystem.mark_committed); a barrier makes commits durable up to an id
(`forget_through`). An inode is durable when it is neither marked, nor sealed but not yet
committed, nor in a commit newer than the durable one.
"""
from __future__ import annotations

from typing import Iterable

PRUNE_FROM = 4096     # committed() forgets durable notes once this many are kept (and at 2x after)


class DurablePoints:
    """Per inode: sealed but not committed yet, or the newest commit that holds a change."""

    def __init__(self) -> None:
        self._uncommitted: set[int] = set()     # sealed into the tree, no commit since
        self._committed_in: dict[int, int] = {}  # inode -> newest commit holding a change of it
        self._prune_at = PRUNE_FROM

    def sealed(self, inos: Iterable[int]) -> None:
        """Changes of `inos` are in the tree now; the next commit holds them."""
        self._uncommitted.update(inos)

    def committed(self, commit_id: int, durable_id: int) -> None:
        """Commit `commit_id` holds everything sealed so far; commits up to `durable_id`
        are durable (notes of those are dropped here too, once they are many, for an
        owner whose barriers do not call forget_through: a group daemon's)."""
        for ino in self._uncommitted:
            self._committed_in[ino] = commit_id
        self._uncommitted.clear()
        if len(self._committed_in) > self._prune_at:
            self.forget_through(durable_id)
            self._prune_at = max(PRUNE_FROM, 2 * len(self._committed_in))

    def forget_through(self, durable_id: int) -> None:
        """Commits up to `durable_id` are durable: their inodes need no more notes."""
        if self._committed_in:
            self._committed_in = {ino: cid for ino, cid in self._committed_in.items() if cid > durable_id}

    def durable(self, ino: int, durable_id: int) -> bool:
        """Whether every sealed change of `ino` is in a commit up to `durable_id` (the
        caller checks that nothing of it waits to be sealed)."""
        return ino not in self._uncommitted and self._committed_in.get(ino, 0) <= durable_id
