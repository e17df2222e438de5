"""One freeze window's capture of a process tree, for successive incremental checkpoints.

What: `TreeCapture(tracking, ...)`, used once per freeze window, runs the capture's steps
inside the stop (`in_stop`): the page selection (the pages written since the last
checkpoint, the pre-copies kept: Incremental.selector), the files (files.FileCapture),
every process's metadata (capture.capture_all), the write tracking armed for the next
checkpoint (Incremental.arm) and the page copy (snapshot.PageCopy: on the other CPU while
the capture goes on, or from a fork snapshot after the thaw). What it gathers is kept here
and stored after the thaw by the caller: the runs of pages copied (`runs()`, with the
pre-copies less the pages written again), the blobs named in the stop (`blobs`, stored
under the ids `ImageWriter.blob_ids` gave them), the parts of the parent image to drop
first (`clears`); `after_thaw(sink)` copies the pages of the fork snapshots.
Why: `sls checkpoint PID` and bench/checkpoint.py (Incremental.capture_snapshot) and the
group daemon (slsfs.group_checkpoint) run the same capture, so the bench measures the
stop the daemon's groups see; storing nothing inside the stop keeps the store's hashing
and compression out of it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from . import copier, kernel, procfs
from .capture import capture_all
from .files import FileCapture
from .freeze import Frozen
from .image import ImageWriter
from .snapshot import PageCopy, RunSink
from .stopwatch import phase

if TYPE_CHECKING:
    from .incremental import Incremental

Run = tuple[int, int, bytes]   # (pid as the process sees it, address, whole pages)


def _without(runs: list[tuple[int, bytes]], ranges: procfs.PageRanges) -> Iterator[tuple[int, bytes]]:
    """The parts of `runs` (address, whole pages) outside `ranges`: the stale pre-copies
    of pages copied again in the stop are not stored at all."""
    again = {page for start, end in ranges for page in range(start, end, kernel.PAGE_SIZE)}
    if not again:
        yield from runs
        return
    for addr, data in runs:
        view, start = memoryview(data), 0
        count = len(data) // kernel.PAGE_SIZE
        for i in range(count + 1):
            if i == count or addr + i * kernel.PAGE_SIZE in again:
                if i > start:
                    yield addr + start * kernel.PAGE_SIZE, view[start * kernel.PAGE_SIZE:i * kernel.PAGE_SIZE]
                start = i + 1


def _blob_namer(blobs: list[bytes], writer: ImageWriter) -> Callable[[bytes], list[str]]:
    """What a FileCapture calls to name a blob: kept in `blobs`, named by `writer`. Not a
    bound method of the TreeCapture, which holds the FileCapture: that reference cycle
    made every checkpoint's capture (its page copies, writer and metadata) wait for
    Python's full cyclic collection, rare in a daemon (mount.daemon.pace_collector):
    ~200 captures, 47,000 objects and hundreds of MB of a Redis group's daemon."""
    def name_blob(data: bytes) -> list[str]:
        blobs.append(data)
        return writer.blob_ids(data)
    return name_blob


class Precopied:
    """The pre-copies a capture keeps, each with the pages of its mapping written again
    since (copied in the stop): `runs()` gives them less those pages. The filtering waits
    for the thaw (a Python step per page: too slow for the stop)."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, list[tuple[int, bytes]], procfs.PageRanges]] = []  # (ns pid, runs, written again)

    def runs(self) -> Iterator[tuple[int, int, bytes]]:
        """(ns pid, address, whole pages) of every pre-copied page not written again."""
        for ns_pid, runs, again in self.kept:
            for addr, data in _without(runs, again):
                yield ns_pid, addr, data



class TreeCapture:
    """The capture of the processes of one freeze window into an image on `writer`'s
    parent (see the module docstring); `fork`: pages may be copied from fork snapshots
    after the thaw (snapshot.PageCopy decides per process)."""

    def __init__(self, tracking: Incremental, writer: ImageWriter, fork: bool = True) -> None:
        self.tracking, self.writer, self.fork = tracking, writer, fork
        self.pages: list[Run] = []           # copied in the stop
        self.blobs: list[bytes] = []         # named in the stop
        self.clears: list[tuple[int, int, int]] = []   # (ns pid, start, end) of the parent image to drop first
        self.early = Precopied()             # pre-copies, stored less the pages written again
        self.copy: PageCopy | None = None
        self.processes: list[dict] = []
        self.files: FileCapture | None = None

    def _keep_run(self, pid: int, addr: int, data: bytes) -> None:
        self.pages.append((pid, addr, data))

    def in_stop(self, frozen: Frozen) -> None:
        """Capture every process of `frozen` (still frozen), and arm the tracking for the next."""
        tracking = self.tracking
        with phase("page_selection"):
            ns_pids = {pid: procfs.ns_id(procfs.frozen_status(pid)["NSpid"]) for pid in frozen.processes}
            self.copy = PageCopy(ns_pids, fork=self.fork, buffers=tracking.buffers,
                                 cpus=copier.other_cpus(frozen.pinning))
            select = self.copy.selector(tracking.selector(frozen, ns_pids,
                                                          lambda *span: self.clears.append(span), self.early))
        self.files = FileCapture(_blob_namer(self.blobs, self.writer), tracking.shared, self.writer.keep_blobs,
                                 tracking.mount_types.type_of)
        self.processes = capture_all(frozen, self._keep_run, self.files, select, keep_injection_page=True,
                                     selected=self.copy.selected, scanning=tracking.scanning)
        tracking.mount_types.end_capture()
        with phase("arm_tracking"):
            tracking.arm(frozen)
        self.copy.in_stop(frozen, self._keep_run)

    def copied(self) -> list[Run]:
        """The runs copied in the stop, not handed over yet."""
        return self.pages + (list(self.copy.copied()) if self.copy is not None else [])

    def runs(self) -> list[Run]:
        """The runs copied in the stop and the pre-copies less the pages written again
        (after the thaw: that filtering is a Python step per page, and so is the cutting
        of the copies' buffers into runs); handed over once."""
        runs = self.copied() + list(self.early.runs())
        self.pages, self.early = [], Precopied()
        if self.copy is not None:
            self.copy.forget_copied()
        return runs

    def after_thaw(self, sink: RunSink) -> None:
        """The processes running again: copy the pages of the fork snapshots into `sink`."""
        if self.copy is not None:
            self.copy.after_thaw(sink)

    def store_metadata(self) -> None:
        """Into the writer: the parent image's parts to drop, then the blobs (before any page)."""
        for span in self.clears:
            self.writer.clear(*span)
        for data in self.blobs:
            self.writer.add_blob(data)
        self.clears = []
        self.blobs.clear()     # (in place: the FileCapture's namer appends to this list)

    def drop(self, frozen: Frozen | None = None) -> None:
        """After an error: the fork snapshots killed and reaped, the copies waited for
        (`frozen`: still inside the freeze window, see PageCopy.drop)."""
        if self.copy is not None:
            self.copy.drop(frozen)

    @property
    def file_records(self) -> list[dict]:
        return self.files.files if self.files is not None else []
