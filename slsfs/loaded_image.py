"""A stored group image read for a restore in the tracer thread (the daemon's restore of a
group, and its clones): LoadedImage.

Apart from slsfs.group_checkpoint (the capture side) so that a daemon restoring after a
crash imports what the restore needs only: the capture side is imported once the
restored processes run (slsfs.daemon).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from objectstore import ChunkId, Store

from checkpointer.image import StoredImage

InTrio = Callable[..., Any]      # runs a function in the trio thread (slsfs.tracer's in_trio)


TRIP_PAGES = 1024  # pages read per trip to the trio thread at restore (4 MiB), at most:
FIRST_TRIP_PAGES = 128  # a process's first trip reads this many, each next one twice as many,
# so that its page writer starts early (a first trip of 1024 pages wrote none meanwhile)


class LoadedImage:
    """A stored image for restore in the tracer thread: its pages read in the trio thread
    FIRST_TRIP_PAGES, then up to TRIP_PAGES at a time, as the restore asks for them (the
    page writer fills the process with one batch while the next is read), blobs fetched
    through the trio thread on demand."""

    def __init__(self, store: Store, root: ChunkId, in_trio: InTrio, stored: StoredImage | None = None) -> None:
        """`stored`: the image at `root` already read (its metadata is not parsed again)."""
        self._stored = stored or StoredImage(store, root)
        self._in_trio = in_trio
        self.store_path, self.root = store.path, self._stored.root   # a lazy restore's page server opens it
        self.processes: list[dict] = self._stored.processes
        self.files: list[dict] = self._stored.files

    def page_vectors(self, pid: int, skip_zero: bool = False,
                     outside: list[tuple[int, int]] = ()) -> Iterator[tuple[int, list[bytes]]]:
        """StoredImage.page_vectors, each batch read by the trio thread (which owns the store)."""
        runs = self._stored.page_vectors(pid, outside, skip_zero)  # advanced in the trio thread only
        trip = [FIRST_TRIP_PAGES]

        def next_batch() -> list[tuple[int, list[bytes]]]:
            batch, pages = [], 0
            for run in runs:
                batch.append(run)
                pages += len(run[1])
                if pages >= trip[0]:
                    break
            trip[0] = min(2 * trip[0], TRIP_PAGES)
            return batch

        while batch := self._in_trio(next_batch):
            yield from batch

    def page_runs(self, pid: int) -> Iterator[tuple[int, bytes]]:
        return ((addr, b"".join(pages)) for addr, pages in self.page_vectors(pid, skip_zero=True))

    def read_blob(self, ids: list[str]) -> bytes:
        return self._in_trio(self._stored.read_blob, ids)

    def read_pieces(self, ids: list[str]) -> list[bytes]:
        return self._in_trio(self._stored.read_pieces, ids)
