"""One group checkpoint, end to end (DESIGN.md). (Reading an image for restore: slsfs.loaded_image.)

`take(...)` runs in the tracer thread (slsfs.tracer); store access goes to the trio
thread (`in_trio`), which owns the store and keeps serving FUSE meanwhile. It takes
every group of a volume at once (they share its files; usually there is one):

  1. freeze every task of the groups' process trees (ptrace);
  2. syncfs the mount (the kernel writes back dirty pages; the trio thread answers),
     unless no file of it can hold writes in the kernel (`Seal`);
  3. seal the file system and commit it (not yet durable): this "files" commit holds
     the file system of the frozen instant, so `.sls/checkpoints/<id>/fs` shows it;
  4. capture the processes: metadata, and memory pages and blobs (pipe contents)
     copied into this process; the parts of the previous image that are gone are noted
     (dropped by write(): the image belongs to the trio thread);
  5. thaw, once 2 is done (run by a task of the trio thread, `Seal`, while this one does
     4; here, at once, when there is nothing to write back nor to commit): the commit of
     3 mostly runs after the thaw, with the trio thread answering nothing in between, so
     it still holds the files of the frozen instant (`Sealing`).
Then `Captured.write()` (trio thread, application running, in short steps with the
mount's requests answered between them: `in_turns`) turns the copied pages into an
image, names it with the files commit's volume root in the `grp/<name>` record, and
commits; the caller makes both commits durable with one fsync. A crash before that
leaves the previous durable group checkpoint intact (the record is only in the second
commit, so a torn tail never pairs new files with an old image).

Incremental capture (`PageTracking`, one per running group: checkpointer.incremental's
Incremental; each freeze window is captured by checkpointer.treecapture.TreeCapture, as
`sls checkpoint` captures): the first image of a group
holds every page; after it, each process's private writable memory is write-tracked
with a userfaultfd in WP_ASYNC mode and a checkpoint copies only the pages written since
the previous one, into a copy of the previous image (so every image is complete); a
process that exec()ed since is captured whole. Any failed checkpoint resets the
tracking (the scan that lists written pages also clears them), so the next image is
full again and never misses a write.

Before the freeze of a full checkpoint, the processes running, the write tracking of the
large processes is armed (Incremental.prearm: not in the stop). Before the freeze of the
others, the pages written since the previous checkpoint are pre-copied
(Incremental.precopy) when the last checkpoint stored many (incremental.PRECOPY_MIN_PAGES): the stop copies only the pages written again since (for
Redis under redis-benchmark, about a third of them); the phase "before_freeze_precopy" is
recorded with the others but is not part of `stop_ms`.
The page copy is out of the stop where that is cheaper (checkpointer.snapshot): a
process with many pages to store gets a fork snapshot while frozen, and its pages are
read from it after the thaw, still in `take()` (the tracer thread), which then kills the
snapshot and has the process reap it (a short stop of its main thread); the stop phases
of that work after the thaw are recorded with the rest, under names that start with
"after_thaw" (they are not part of `stop_ms`).
Simplification: the pages are held in memory until written (the daemon's store belongs
to the trio thread).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, wait
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import Any, Callable, Generator, Protocol, TypeVar

import trio

from objectstore import ChunkId

from checkpointer import CheckpointError, freeze
from checkpointer.freeze import Frozen
from checkpointer.image import ImageWriter
from checkpointer.kernel import PAGE_SIZE
from checkpointer.incremental import Incremental
from checkpointer.treecapture import TreeCapture
from checkpointer import stopwatch
from checkpointer.stopwatch import phase, recording

Done = TypeVar("Done")
YIELD_S = 0.001            # Captured.write lets trio serve FUSE at least this often (in_turns) ...
BATCH_BYTES = 256 << 10    # ... its steps: a batch of pages stored (~0.4-1 ms of work), a page block, a tree node


FilesCommit = tuple[int, ChunkId]     # (commit id, volume root): the file system of the frozen instant


THAW_WAIT_S = 1.0    # the longest the trio thread holds its files commit back for the thaw (Sealing)


class Sealing:
    """One seal under way (`Seal.start`), as the tracer thread sees it: `drained` (its
    stop phases so far) once the daemon holds every write the frozen processes made (the
    syncfs and its drain are done), `committed` ((files commit, its phases)) once the
    files are committed. The tracer thaws at `drained`, not at `committed`: with the
    kernel's writes all in, the trio thread commits in the same step, answering no request
    in between (no await), so the commit holds the files of the frozen instant even when
    the processes already run again: whatever they ask of the mount after the thaw waits
    for the commit. The commit (~0.3 ms of Python at each SQLite stop) then costs the
    stop nothing when the tracer's capture is done first (`capture_done`, the usual case):
    the trio thread waits without Python's lock until the tracer says `thawed` (or
    THAW_WAIT_S), else the thaw would wait for the commit's Python, Python's lock going
    from one thread to the other only at system calls. While the tracer still captures it
    may need the mount (files it reads), so the trio thread then commits at once."""

    def __init__(self) -> None:
        self.drained: Future = Future()
        self.committed: Future = Future()
        self._capture_done = threading.Event()
        self._thawed = threading.Event()

    def capture_done(self) -> None:
        """The tracer needs the mount no more in this stop (from the tracer thread)."""
        self._capture_done.set()

    def thawed(self) -> None:
        """Every frozen task is let go, or the stop failed (from the tracer thread; always)."""
        self._thawed.set()

    def hold_for_the_thaw(self) -> bool:
        """In the trio thread, once drained: wait for the thaw if the capture is done;
        whether it waited."""
        if not self._capture_done.is_set():
            return False
        self._thawed.wait(THAW_WAIT_S)
        return True

    def fail(self, exc: BaseException) -> None:
        """`exc` is the outcome of whatever is not done yet (the tracer raises it)."""
        for future in (self.drained, self.committed):
            if not future.done():
                future.set_exception(exc)


class SealedFiles(Protocol):
    """The file system of a group's mount as its seal sees it (slsfs.sealed_mount's
    SealedMount; tests and bench/redis_stop.py have their own). The tracer thread asks
    the first three at the freeze; the others are called in the trio thread."""

    def syncfs_needed(self) -> bool:
        """Whether the kernel may hold writes of the mount to write back (asked once a
        seal: the question resets the mount's mark)."""

    def files_unchanged(self) -> FilesCommit | None:
        """A commit that already holds the file system as it is, if one does."""

    def request_sync(self) -> Any:
        """Ask for a syncfs of the mount now, without waiting: what `synced_now` and `sync`
        take (None: it could not be asked so)."""

    def synced_now(self, request: Any) -> bool:
        """Whether that syncfs is answered with nothing left to drain (True once only)."""

    async def sync(self, request: Any) -> None:
        """Finish that syncfs (None: make one), then drain what the kernel queued."""

    def commit_files(self) -> FilesCommit:
        """The file system of this instant, committed (not yet durable)."""


@dataclass(frozen=True)
class Seal:
    """Steps 2 and 3 of a group checkpoint (the group frozen), as the daemon does them: in
    the trio thread (reached through `trio_token`; a task of `nursery` when it must wait),
    `files.sync()` (syncfs of the mount through the helper process, then the drain of what
    the kernel queued: the same thread answers those write-back requests meanwhile), then
    `files.commit_files()`: (commit id, volume root), after the thaw when it can (`Sealing`).
    The tracer thread captures the processes meanwhile. Run
    there and not in a thread of its own that hands the commit to trio, the seal saves a
    thread's wake-up, that hand-off and the way back (~0.9 of ~1.95 ms of a SQLite stop,
    traced at 100 Hz); other processes' FUSE requests are answered between its steps.
    The syncfs is asked for by the tracer thread at the freeze (`files.request_sync()`),
    so the helper runs it on another CPU
    during the capture: the trio thread gets its turn only once the real-time tracer
    blocks (it is woken on the tracer's CPU), and then mostly finds the syncfs answered
    and nothing left to drain (`files.synced_now(request)`), and commits at once, without a
    task (its start and the syncfs's round trip were ~0.4 ms of a SQLite stop at 100 Hz);
    else `files.sync(request)` waits for the rest.
    The sync is left out when `files.syncfs_needed()` says the kernel holds nothing to
    write back (mount.FileSystem.syncfs_needed: no file of the mount open for writing,
    none opened since the last syncfs); no request of a frozen task can be in flight
    either (a task stops only once the daemon answered it). The files commit is an
    existing one when `files.files_unchanged()` (asked after the sync) names one that
    holds the file system as it is. Without `trio_token` only such a seal, with nothing
    to sync nor to commit, can be made (a process outside any mount: bench/redis_stop.py)."""

    files: SealedFiles
    trio_token: trio.lowlevel.TrioToken | None = None
    nursery: trio.Nursery | None = None

    def start(self, sealing: Sealing | None = None) -> Sealing:
        """Begin the seal (the group frozen; from the tracer thread) into `sealing` (a new
        one if None), which it returns. Its steps' times are
        recorded by the tracer thread as the phases "seal_start" (until the trio thread
        began it), "syncfs" (what was left of it then) and "files_commit"
        ("after_thaw_files_commit" when the commit waited for the thaw), which overlap the
        capture's: the stop waits for what is left of them up to the drain as "seal_wait".
        When the kernel holds no write to bring in and the files are unchanged (a group
        that writes no file: Redis without persistence), the answer is found here, at once,
        without a trip to the trio thread (on a busy machine the stop waited for another
        thread to get a CPU and Python's lock: up to 12 ms of a 10 Hz Redis stop at load 6,
        for 0.05 ms of work)."""
        started = time.perf_counter()
        sealing = sealing or Sealing()
        synced = not self.files.syncfs_needed()   # (asked once: it resets a mark)
        if synced and (unchanged := self.files.files_unchanged()):
            sealing.drained.set_result({"syncfs": 0.0})
            sealing.committed.set_result((unchanged, {"files_commit": (time.perf_counter() - started) * 1000}))
            return sealing
        requested = None if synced else self.files.request_sync()
        try:
            self.trio_token.run_sync_soon(self._begin, sealing, synced, requested, started)
        except trio.RunFinishedError:
            sealing.fail(CheckpointError("the daemon stopped serving during the checkpoint"))
        return sealing

    def _begin(self, sealing: Sealing, synced: bool, requested: Any, asked: float) -> None:
        """In the trio thread (a run_sync_soon callback: it must not raise): the seal at
        once when the syncfs asked for is done, else in a task that waits for it."""
        started = time.perf_counter()
        try:
            if synced or (requested is not None and self.files.synced_now(requested)):
                self._commit(sealing, {"seal_start": (started - asked) * 1000,
                                       "syncfs": (time.perf_counter() - started) * 1000})
                return
            self.nursery.start_soon(self._seal, sealing, requested, asked)
        except RuntimeError:                 # the nursery is closed: the daemon is stopping
            sealing.fail(CheckpointError("the daemon stopped serving during the checkpoint"))
        except Exception as exc:             # (the syncfs failed)
            sealing.fail(exc)

    async def _seal(self, sealing: Sealing, requested: Any, asked: float) -> None:
        """The seal's task, when the sync is still under way: its outcome goes to
        `sealing`, never out of the task (the tracer thread waits for it before the thaw,
        whatever happens); `asked`: when start() was called."""
        with trio.CancelScope(shield=True):  # a half-done freeze must finish (and thaw)
            try:
                started = time.perf_counter()
                await self.files.sync(requested)
            except BaseException as exc:
                sealing.fail(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                self._commit(sealing, {"seal_start": (started - asked) * 1000,
                                       "syncfs": (time.perf_counter() - started) * 1000})

    def _commit(self, sealing: Sealing, times: dict[str, float]) -> None:
        """Once synced, in the trio thread and in one step (no other request may be answered
        between the drain and the commit: `Sealing`): drained, then the files committed."""
        try:
            sealing.drained.set_result(times)
            waited = sealing.hold_for_the_thaw()
            committing = time.perf_counter()
            committed = self.files.files_unchanged() or self.files.commit_files()
        except BaseException as exc:
            sealing.fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            name = "after_thaw_files_commit" if waited else "files_commit"
            sealing.committed.set_result((committed, {name: (time.perf_counter() - committing) * 1000}))


# One group's write tracking between its checkpoints (tracer thread for everything but
# `parent`, which the daemon sets once an image is durable; `reset()` after a failure).
PageTracking = Incremental


@dataclass
class Captured:
    """What a freeze window produced; `write()` stores it (in the trio thread)."""

    files_commit: int
    fs_root: ChunkId
    writer: ImageWriter
    processes: list[dict]
    files: list[dict]
    tree: TreeCapture                       # its blobs named and parts of the parent to drop (stored first)
    pages: list[tuple[int, int, bytes]]
    stop_ms: float                          # from the freeze to the last task let go
    stop_phases_ms: dict[str, float]        # where the stop went (checkpointer.stopwatch)

    async def write(self) -> ChunkId:
        """The image root, stored in the trio thread a step at a time (`in_turns`): the
        blobs and the parts of the parent to drop, each batch of BATCH_BYTES of pages (one
        put_many), then each step of ImageWriter.finishing (a page block, the metadata, a
        tree node)."""
        return await in_turns(self._writing())

    def _writing(self) -> Generator[None, None, ChunkId]:
        self.tree.store_metadata()          # before the pages: a mapping stored whole is cleared first
        yield
        batch: list[tuple[int, int, bytes]] = []
        batch_bytes = 0
        for run in self.pages:
            batch.append(run)
            batch_bytes += len(run[2])
            if batch_bytes >= BATCH_BYTES:
                self.writer.add_runs(batch)
                batch, batch_bytes = [], 0
                yield
        self.writer.add_runs(batch)
        self.pages.clear()
        return (yield from self.writer.finishing(self.processes, self.files))


async def in_turns(steps: Generator[None, None, Done]) -> Done:
    """Run `steps` (a generator of short steps) to its end in the trio thread; what it
    returns. Trio gets its turn (FUSE requests, the control socket) whenever YIELD_S have
    passed since the last: the application's file requests wait for a step, not for the
    whole (an image's write was 2.5-3.9 ms at each SQLite checkpoint at load 10, of which
    its finish, 1.5-2.4 ms, in one piece); a fixed 1 MiB of pages between turns was 1-2 ms
    on a quiet machine and 3-5 ms under load. Not a worker thread: the store (its pack
    index, the active pack, the node cache) serves the mount's requests in this thread
    without locks, and the write is Python work that holds Python's lock all along: this
    thread, woken by a request, would wait for that lock up to a switch interval (5 ms)."""
    turn = time.perf_counter()
    with closing(steps):
        while True:
            try:
                next(steps)
            except StopIteration as end:
                return end.value
            if time.perf_counter() - turn >= YIELD_S:
                await trio.sleep(0)
                turn = time.perf_counter()


@dataclass
class Member:
    """One group of a checkpoint: its processes' roots, the image they are written into
    (made in the trio thread before the stop, on the previous image `tracking.parent`),
    and its write tracking."""

    pids: list[int]
    writer: ImageWriter
    tracking: PageTracking


def take(members: list[Member], seal: Seal) -> list[Captured]:
    """Steps 1-5 above for every group of `members` at one instant (the groups of a volume
    share its files: all are frozen before the seal, so each image pairs with the same
    files commit; one group in the common case), into their writers. `seal` (steps 2-3)
    runs in the trio thread during the capture: the only trip there inside the stop (each
    costs a thread hand-off: a millisecond or more on a busy machine). The pages written
    since the previous checkpoint are copied first, the processes running
    (`tracking.precopy()`): the stop copies only those written again since. On any error
    the caller resets every member's `tracking`."""
    captures = [_GroupCapture(member) for member in members]
    with recording() as phases:
        for capture in captures:
            capture.before_freeze()
        started = time.perf_counter()
        sealing = Sealing()
        try:
            with ExitStack() as frozen_groups:
                frozen_groups.callback(sealing.thawed)      # (run last: once every group is let go)
                frozen = [_blaming(index, frozen_groups.enter_context, freeze(member.pids, tree=True))
                          for index, member in enumerate(members)]
                seal.start(sealing)
                try:
                    for index, (capture, group) in enumerate(zip(captures, frozen)):
                        _blaming(index, capture.in_stop, group)
                    with phase("alive_checks"):
                        for index, group in enumerate(frozen):
                            _blaming(index, group.check_alive)
                except BaseException:
                    wait([sealing.drained])      # never thaw before the kernel's writes are in
                    raise
                sealing.capture_done()
                with phase("seal_wait"):
                    drained_phases = sealing.drained.result()
            (files_commit, fs_root), commit_phases = sealing.committed.result()
        except BaseException:
            for capture in captures:
                capture.drop()
            raise
        for name, ms in {**drained_phases, **commit_phases}.items():
            stopwatch.add(name, ms)
        thawed = max((group.thawed_at for group in frozen if group.thawed_at), default=time.perf_counter())
        stopped_ms = (thawed - started) * 1000
        for capture, group in zip(captures, frozen):
            capture.after_thaw(group)
    return [capture.captured(files_commit, fs_root, stopped_ms, {k: round(v, 3) for k, v in phases.items()})
            for capture in captures]


class PartnerFailed(CheckpointError):
    """The capture of `members[index]` (not the first) of a take() failed: the others can
    be checkpointed without it."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(str(cause))
        self.index = index


def _blaming(index: int, step: Callable[..., Any], *args: Any) -> Any:
    """step(*args), its error a PartnerFailed when it concerns a member other than the first."""
    try:
        return step(*args)
    except (CheckpointError, OSError) as exc:
        if index == 0:
            raise
        raise PartnerFailed(index, exc) from exc


class _GroupCapture:
    """What take() gathers for one group: the capture of its process tree (TreeCapture, as
    `sls checkpoint` and bench/checkpoint.py run it) and its pages, stored by write()."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.tree = TreeCapture(member.tracking, member.writer)
        self.pages: list[tuple[int, int, bytes]] = []

    def before_freeze(self) -> None:
        with phase("before_freeze_prearm"):
            self.member.tracking.prearm(self.member.pids)
        with phase("before_freeze_precopy"):
            self.member.tracking.precopy()

    def in_stop(self, frozen: Frozen) -> None:
        self.tree.in_stop(frozen)

    def drop(self) -> None:
        self.tree.drop()

    def after_thaw(self, frozen: Frozen) -> None:
        tracking = self.member.tracking
        with phase("after_thaw_release_pages"):
            tracking.release_pages(frozen.processes)   # of processes that left the group's tree
        self.tree.after_thaw(lambda *run: self.pages.append(run))
        with phase("after_thaw_precopied"):
            self.pages.extend(self.tree.runs())
        tracking.last_pages = sum(len(run[2]) for run in self.pages) // PAGE_SIZE   # (precopy's threshold)

    def captured(self, files_commit: int, fs_root: ChunkId, stopped_ms: float, phases: dict[str, float]) -> Captured:
        return Captured(files_commit, fs_root, self.member.writer, self.tree.processes, self.tree.file_records,
                        self.tree, self.pages, stopped_ms, phases)
