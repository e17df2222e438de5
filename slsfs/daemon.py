"""The slsfs daemon: one per store, it serves the mount and checkpoints persistence groups.

`python -m slsfs.daemon STORE --mountpoint M [--volume V] [--restore GROUP [--at SPEC]
[--or-new-at M]] [--like GROUP]` (started by `sls run` / `sls restore`). In one process it:
- serves volume V of the store at M over FUSE (mount.filesystem.FileSystem, trio loop);
- runs each group's processes and checkpoints them at their rate, so that ONE commit
  names both the group's process image and the file system of the same instant
  (slsfs.group_checkpoint); ptrace happens in one tracer thread (slsfs.tracer);
- answers `<store>/control.sock` (mount.control protocol): the group ops below, and
  every file-system op of the mount daemon (status, checkpoint, snapshot, log, ...).

Group ops: run {settings, env}, persist {pid, name, hz}, group_checkpoint {group, name?},
barrier {group}, resolve_group {group, at?, checkpoint_names?}, clone_group {group, at?, count}, ps,
restore {group, at?, force?, mountpoint?}, stop_group {group}, shutdown. Clones run on O(1) clones of the checkpoint's volume grafted into the mount
(`<mount>/<group>.clone<N>/`, paths remapped at restore); each is a group of its own (its
`directory` in its settings), checkpointed like the others.

The groups of a volume share its files, so they are checkpointed together: a checkpoint
of one freezes every checkpointed group of the daemon, seals the file system once and
captures each group into its own image, all paired with that one files commit (a group
checkpointed with another since its last turn skips that turn: all of them are
checkpointed at the fastest rate any asks for).

With --restore, before mounting, the volume is reset to the file system recorded in
the group checkpoint (the newest, or the one current at --at), then the processes are
restored from its image once the mount is live, and those of the other groups whose
checkpoints pair with the same files commit (checkpointed with it). `sls restore` with
the daemon running (a roll back, or the group alone crashed) is done by the daemon in
place (restore_in_place: the same steps, the mount ended and made again, no new
daemon's ~250 ms start). Log: `<store>/daemon.log`.

Checkpoints asked for are retried on the transient errors of freezing a busy tree; a
stop kills the groups first and ends the process within STOP_WATCHDOG_S whatever hangs.
Old checkpoints are thinned by the store's retention policy (slsfs.group_retention).
The daemon's session runs at a raised CPU share (slsfs.daemon_priority): it answers the
groups' file requests.

The mount is made with allow_other (group processes may run as any user; the kernel
checks permissions) and the kernel's writeback cache (writes land in the page cache and
reach the daemon in batches: mount.filesystem). A group checkpoint brings the group's
dirty pages in while the group is frozen, through the mount's syncfs helper process
(mount.flusher, asked from the trio thread, which answers the write-back meanwhile: no
thread of the daemon sleeps in syncfs itself, so a SIGKILLed daemon can always exit; the
helper syncfs()es the daemon's own descriptor of the mount root); a stop flushes what
the dying processes left in the cache before unmounting.

A group whose image holds at least LAZY_MIN_BYTES of pages is restored lazily
(checkpointer.lazy): it runs at once while a page server (a fork of this daemon, made
from the trio thread, which owns the store: the fork's copy of the store is consistent)
fills its private memory; its checkpoints (periodic or asked for), and GC, wait until
every page is in and the server has exited. If the server dies
first, its guard SIGKILLs the group's processes (the checkpoint stays in the store).

Simplifications: the mount's own periodic file-system checkpoints are off (group
checkpoints commit instead), and so are its commits at fsync (a restore rolls the volume
back to a group checkpoint, fsync()ed writes included: mount.FileSystem's
fsync_commits); restoring resets the whole volume, so the
running groups of a store are stopped when one is restored (`sls restore --force`).
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import importlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Awaitable, Callable, NoReturn

import trio

from objectstore import ChunkId, Commit, Store, StoreError

from checkpointer import CheckpointError
from checkpointer.image import StoredImage
from checkpointer.kernel import PAGE_SIZE
from checkpointer.lazy import PageServer
from checkpointer.procfs import with_descendants
from checkpointer.restore import TOP_RESTORE_PHASES, Restored, restore as restore_image
from checkpointer.stopwatch import recording
from mount.control import CONTROL_VERSION, slsfs_mounts
from mount.control_server import control_listener, exchange, send_line
from mount import daemon as mount_daemon
from mount.filesystem import FileSystem, MountError, clone_volume_roots, mount_device

from . import daemon_priority, group_init, group_process, groups, orphans, rootfs
from .daemon_ready import LOG_NAME, REFUSED, ready_line
from .group_commit import GroupCommit
from .group_process import RunningGroup
from .loaded_image import LoadedImage
from .sealed_mount import SealedMount
from .groups import GroupCheckpoint, GroupError, GroupSettings
from .tracer import Tracer

log = logging.getLogger("slsfs.daemon")
RETRY_AFTER_ERROR_S = 1.0
QUICK_RETRIES = 3             # periodic checkpoints failing in a row before waiting RETRY_AFTER_ERROR_S
STOP_WAIT_S = 10.0
RETENTION_EVERY_S = 5.0
EXIT_POLL_S = 0.5             # how often a group checkpointed only when asked is looked at: has it ended?
COMMAND_EXIT_WAIT_S = 1.0    # a restoring daemon's wait for its command to exit (Daemon._until_the_command_ends)
STOP_WATCHDOG_S = 40.0        # a stop that is still not done by then ends the process at once
CHECKPOINT_ATTEMPTS = 20
UNDURABLE_COMMITS_MAX = 4     # commits not yet durable when a periodic checkpoint starts, at most
# (a checkpoint makes one or two: its files commit, its record's): slsfs.group_commit
LAZY_MIN_BYTES = 8 << 20      # a restore of more pages than this runs the processes first (lazy):
# measured after a crash (Python groups, daemon's restore): 8.6 MiB of pages eager 68 ms, lazy 48;
# 14.8 MiB 83 vs 62; 5.7 MiB 38 vs 42 (lazy's fixed cost: the page server's fork and its arming).
# Again 2026-12-02 (C groups of N MiB, the application alone SIGKILLed, the daemon's restore_ms,
# eager and lazy daemons in turns, medians of 6-8, load 3.1-6.8): 4 MiB eager 32.6 / lazy 52.4 ms,
# 47.1 / 50.7; 6 MiB 53.0 / 67.1; 8 MiB 28.9 / 35.8, 48.7 / 31.3, 77.2 / 57.8, 43.6 / 59.2 (lazy
# lower in 15 of 28 pairs: the crossing); 12 MiB 62.6 / 45.0, 60.6 / 65.9; 16 MiB 55.4 / 38.8,
# 53.9 / 43.1; 64 MiB 130.9 / 37.5: kept at 8 MiB
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
Announce = Callable[[int], Awaitable[None]]    # told a group's checkpoint number before its freeze


class Startup:
    """Where a daemon's start went, phase by phase (milliseconds; `ps` startup_ms), up to
    the moment it said it serves: what `sls restore` waits for beyond the restore itself
    (imports, the store's opening, the stale mount, the mount, ...)."""

    def __init__(self, phases: dict[str, float] | None = None) -> None:
        self.phases = dict(phases or {})
        self._last = time.perf_counter()

    def done(self, phase: str) -> None:
        """`phase` took the time since the last one ended (or since this record began)."""
        now = time.perf_counter()
        self.phases[phase] = round((now - self._last) * 1000, 2)
        self._last = now


class Daemon:
    def __init__(self, store: Store, fs: FileSystem, mountpoint: str, startup: Startup | None = None,
                 command: int | None = None, device_minor: int | None = None) -> None:
        self.store, self.fs, self.mountpoint = store, fs, mountpoint
        self.command = command                # the pid of the command that started us and waits for us
        self.device_minor = device_minor      # the device number to mount on again (detach_stale)
        self.startup = startup or Startup()
        self.tracer = Tracer()
        self.groups: dict[str, RunningGroup] = {}
        self.lock = trio.Lock()               # one checkpoint at a time (up to its commit record)
        self.restoring = trio.Lock()          # one restore in place at a time
        self.group_commit = GroupCommit(store, fs.barrier)   # ... made durable together, off the lock
        self.nursery: trio.Nursery | None = None
        self.failed = ""
        self.stopping = False                 # set by stop(): the groups' ends are its doing
        self.mount_fd = -1                    # the mount's root, opened once (its syncfs helper's: flush_through)
        self.roots: set[str] = set()          # root file systems prepared for --root groups (slsfs.rootfs)
        self.pages_coming: dict[str, trio.Event] = {}   # lazily restored groups: set once all pages are in
        self.checkpoints_imported = trio.Event()   # set by import_checkpoints (once the daemon serves)
        self._serving: trio.CancelScope | None = None   # the mount's serving (_serve), ended by a remount
        self._served = trio.Event()               # set once that serving has ended
        self.restored = ""                        # the group a restore (at the start, or in place) asked for
        self.in_place_restore_ms: dict[str, float] = {}   # the phases of the last restore_in_place
        self.gc = {"collections": 0, "running_since": None, "last": None}   # `ps`'s: see _collect
        self._collecting = 0                      # collections under way (an explicit one may wait for another)

    # ----- checkpoints ---------------------------------------------------------------
    async def checkpoint(self, group: RunningGroup, label: str, alone: bool = False, wait: bool = True,
                         unless_taken_since: int | None = None, announce: Announce | None = None) -> int | None:
        """One group checkpoint (slsfs.group_checkpoint); its commit id, durable on return
        unless `wait` is False (a periodic one: its durability is awaited in the background,
        `_settle`, so the next checkpoint's freeze need not wait for this one's fdatasync).
        The other groups checkpointed on this volume are checkpointed with it, at the same
        instant (`_partners`; not when `alone`): after a crash all of them come back with
        the files of that instant. None, and no checkpoint, if `unless_taken_since` is
        given and the group's checkpoint count (seq) is past it once this one may begin: a
        partner's checkpoint, under way as this one was asked for, took the group too; or if
        the group was ended by a restore in place (`replaced`). `announce` is told the
        group's checkpoint number before the freeze (a client of it waiting inside the
        group reads it after a restore from this checkpoint: mount.control.request)."""
        await self.checkpoints_imported.wait()
        from . import group_checkpoint
        while coming := [self.pages_coming[g.name] for g in [group, *self._partners(group, alone)]
                         if g.name in self.pages_coming]:
            await coming[0].wait()               # an image must not miss pages that are not in yet
        if group.replaced:                       # (its mount is gone, or going: restore_in_place)
            return None
        await self.fs.flush_through(self.mount_fd)   # (started by main: a stop's syncfs must not wait for it)
        if not wait:                             # a disk slower than the checkpoints holds them back
            await self.group_commit.within(UNDURABLE_COMMITS_MAX)
        async with self.lock:
            if group.replaced or (unless_taken_since is not None and group.seq != unless_taken_since):
                return None
            members = [group] + [g for g in self._partners(group, alone) if g.name not in self.pages_coming]
            if announce is not None:
                await announce(group.seq + 1)
            while True:
                started = time.perf_counter()
                try:
                    commit, captures, images = await self._take(group, members, label)
                    break
                except group_checkpoint.PartnerFailed as exc:   # the others go on without it
                    left_out = members.pop(exc.index)
                    left_out.left_out_until = time.monotonic() + RETRY_AFTER_ERROR_S
                    log.warning("checkpoint of group %s: taken without group %s, whose capture failed: %s",
                                group.name, left_out.name, exc)
            taken = []
            for member, captured, image in zip(members, captures, images):
                member.tracking.parent = image       # the next image builds on it, durable or not yet
                member.seq += 1
                member.newest_checkpoint = commit
                taken.append((member, captured.stop_ms, captured.writer.pages, captured.stop_phases_ms,
                              member.tracking.last_precopied))
        if wait:
            await self._settle(commit, taken, started)
        else:
            self.nursery.start_soon(self._settle_later, commit, taken, started)
        return commit

    async def _settle(self, commit: int, taken: list[tuple], started: float) -> None:
        """Once `commit` is durable (slsfs.group_commit: one fdatasync for every commit made
        before it began), note it as its groups' newest durable checkpoint, with its figures
        (`taken`: per group, its stop and pages); if it cannot be made durable, each group's
        next image is full (as after any failed checkpoint) and the error is the groups'
        (`sls barrier` then checkpoints again, `sls ps` shows it) and raised."""
        try:
            await self.group_commit.durable(commit)
        except (StoreError, OSError) as exc:
            log.warning("checkpoint %d could not be made durable: %s", commit, exc)
            async with self.lock:                # (the tracer may be capturing the next one)
                for member, *_ in taken:
                    member.error = f"checkpoint {commit} could not be made durable: {exc}"
                    member.tracking.reset()
            raise
        durable_ms = (time.perf_counter() - started) * 1000
        for member, stop_ms, pages, stop_phases, precopied in taken:
            member.last_checkpoint = max(member.last_checkpoint or 0, commit)
            member.note_checkpoint(stop_ms, durable_ms, pages, stop_phases, precopied)

    async def _settle_later(self, commit: int, taken: list[tuple], started: float) -> None:
        """_settle in the background (a periodic checkpoint): its failure is noted there."""
        try:
            await self._settle(commit, taken, started)
        except (StoreError, OSError):
            pass

    async def _take(self, group: RunningGroup, members: list[RunningGroup], label: str,
                    ) -> tuple[int, list, list[ChunkId]]:
        """The checkpoint of `members` (`group` first) written and committed (not yet
        durable: `_settle`); on any error each member's tracking is reset (its next image is
        full: it cannot miss a write)."""
        from checkpointer.image import ImageWriter
        from . import group_checkpoint
        try:
            seal = group_checkpoint.Seal(SealedMount(self.fs, self.store, f"group {group.name} #{group.seq + 1}"),
                                         trio.lowlevel.current_trio_token(), self.nursery)
            captures = await self.tracer.run(group_checkpoint.take, [
                group_checkpoint.Member(member.pids, ImageWriter(self.store, member.tracking.parent),
                                        member.tracking) for member in members], seal)
            images = []
            files_commit = captures[0].files_commit     # one seal for all of them
            clones = clone_volume_roots(self.fs.volume_name, self.store.commit_by_id(files_commit).roots)
            for member, captured in zip(members, captures):
                images.append(await captured.write())
                pids = [p["pid"] for p in captured.processes if not p.get("zombie")]
                groups.save(self.store, GroupCheckpoint(member.settings, member.seq + 1, time.time(), images[-1],
                                                        captured.fs_root, pids, captured.files_commit, clones,
                                                        self.fs.device_minor))
            names = " ".join(f"{member.name} #{member.seq + 1}" for member in members)
            commit = self.store.commit(f"group {names}: {label}", durable=False).id
        except BaseException:
            for member in members:
                member.tracking.reset()
            raise
        return commit, captures, images

    def _partners(self, group: RunningGroup, alone: bool = False) -> list[RunningGroup]:
        """The other groups of this daemon (all on its volume: clones too, whose directories
        are grafted into it), running, but for one whose checkpoints fail (its own
        last one, or its capture a moment ago in another's): it would make every checkpoint
        of the others fail with it, and each failure costs them a full image next (the
        write tracking of every group of a failed checkpoint starts again). None if `alone`."""
        now = time.monotonic()
        return [] if alone else [
            other for other in self.groups.values()
            if other is not group and not other.error and other.left_out_until <= now and other.alive()]

    async def checkpoint_retrying(self, group: RunningGroup, label: str, announce: Announce | None = None) -> int:
        """A checkpoint asked for (a group's first, `sls checkpoint`), retried a few times: a
        freeze can meet a child that is exiting at that moment (PTRACE_SEIZE of an exiting
        task answers EPERM, e.g. a shell pipeline's short-lived commands; its /proc entries
        vanish while it is read), which the next attempt no longer sees. (Periodic
        checkpoints just try again at their next turn.)"""
        for attempt in range(CHECKPOINT_ATTEMPTS):
            try:
                return await self.checkpoint(group, label, announce=announce)
            except (CheckpointError, OSError) as exc:     # ProcessGone too: a child may have exited
                if attempt + 1 == CHECKPOINT_ATTEMPTS or not group.alive():
                    raise
                log.warning("checkpoint of group %s failed, retrying: %s", group.name, exc)
                await trio.sleep(min(0.02 * (attempt + 1), 0.2))
        raise AssertionError("unreachable")

    async def _checkpoint_for_barrier(self, group: RunningGroup) -> None:
        """A checkpoint for `sls barrier` on a group whose periodic checkpoints fail, so that
        the barrier says so (a GroupError) instead of naming an old checkpoint as durable; a
        passing failure (a child exiting as it was frozen) just makes the barrier wait for it."""
        try:
            await self.checkpoint_retrying(group, "periodic")
        except (CheckpointError, OSError) as exc:
            raise GroupError(f"group {group.name}: its checkpoints fail, so its newest durable one "
                             f"({group.last_checkpoint}) is older than its state: {exc}") from exc

    async def run_checkpoints(self, group: RunningGroup) -> None:
        """Checkpoint `group` at its rate, but for a turn that finds it checkpointed since its
        last turn (with a partner, or as asked: its seq moved), also while waiting to begin:
        partners at --hz 100 took one checkpoint each per turn, ~130 of both a second."""
        period = 1.0 / group.settings.hz
        next_at = time.monotonic() + period
        failures = 0
        while group.alive():
            seen = group.seq
            await trio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + period, time.monotonic())
            if group.seq != seen:
                continue
            try:               # after a failure, alone: the others' checkpoints go on without it
                await self.checkpoint(group, "periodic", alone=bool(group.error), wait=False,
                                      unless_taken_since=seen)
                group.error, failures = "", 0
            except (CheckpointError, StoreError, OSError) as exc:   # ProcessGone: maybe only a child
                if not group.alive():
                    break
                group.error, failures = str(exc), failures + 1
                log.warning("checkpoint of group %s failed, will retry: %s", group.name, exc)
                if failures >= QUICK_RETRIES:     # not a passing race (a full disk?): slow down
                    await trio.sleep(RETRY_AFTER_ERROR_S)
        await self._ended(group)

    async def _wait_for_exit(self, group: RunningGroup) -> None:
        """A group checkpointed only when asked (--hz 0): its end noted once it ends."""
        while group.alive():
            await trio.sleep(EXIT_POLL_S)
        await self._ended(group)

    async def _ended(self, group: RunningGroup) -> None:
        group.note_ended()
        if (coming := self.pages_coming.get(group.name)) is not None:
            await coming.wait()       # its page server's end: it may say why the group ended
        noted_already = self.stopping or group.replaced      # (by stop, or by a restore in place)
        status = None if noted_already else await _exit_status(group)
        await self.checkpoints_imported.wait()      # (its tracking is made by the capture side)
        async with self.lock:
            group.tracking.reset()
            if not noted_already:
                self._note_ends([group], "exited", status, group.ended_because)
        group.reap()
        log.info("group %s has exited (status %s); last checkpoint %s", group.name, status, group.last_checkpoint)

    def _note_ends(self, ended: list[RunningGroup], how: str, status: int | None, why: str = "") -> None:
        """Under the lock: note in the records of `ended` how they ended, for `sls ps`
        once no daemon runs (slsfs.groups.mark_ended)."""
        for group in ended:
            groups.mark_ended(self.store, group.name, how, status, why)
        if ended:
            self.store.commit(f"group {' '.join(g.name for g in ended)}: {how}", durable=False)

    async def run_retention(self) -> None:
        """Thin old checkpoints every RETENTION_EVERY_S by the store's policy, keeping what
        group records name (slsfs.group_retention.needed, the FileSystem's `also_keep`) and
        the checkpoints being browsed (FileSystem.kept_beyond_policy), and give the space
        back once the packs have doubled (Store.gc_due): without that a busy group fills
        the disk with the pages of forgotten checkpoints."""
        while True:
            await trio.sleep(RETENTION_EVERY_S)
            async with self.lock:
                try:
                    forgotten = self.fs.apply_retention()     # keeps what group records and browsers need
                except (StoreError, GroupError) as exc:
                    log.warning("retention failed, will retry: %s", exc)
                    continue
            if forgotten:
                log.info("retention: forgot %d old checkpoints", forgotten)
            if self.store.gc_due():
                try:
                    collected = await self._collect(spare_young=True)
                except (StoreError, GroupError) as exc:
                    log.warning("gc failed, will retry: %s", exc)
                    continue
                log.info("gc: freed %d bytes in %.1f s, %.2f s of it in the trio thread (%d live chunks)",
                         collected["bytes_freed"], collected["seconds"], collected["busy_seconds"],
                         collected["live_chunks"])

    async def _collect(self, prune=None, *, spare_young: bool = False) -> dict:
        """A collection that checkpoints and FUSE requests go on beside (FileSystem.collect),
        keeping what group records need and what is browsed (FileSystem.kept_beyond_policy);
        it starts between two checkpoints (under the lock), and deletes no pack while a lazy
        restore's page server runs (it reads the packs through its fork's copy of the
        index). An explicit retention.Prune commits the files first (FileSystem.collect
        says why). `spare_young`: its own collections leave the youngest packs of pages
        stored as they are for the next one (objectstore.gc.Collection._spared), not an
        `sls gc`, which is asked for the space. `ps` shows them (gc: the collections ended, since when one is under way,
        the last one's figures), so that a benchmark can tell how an application fares
        while one runs."""
        if not self._collecting:
            self.gc["running_since"] = time.time()
        self._collecting += 1
        try:
            collected = await self.fs.collect(prune, start_lock=self.lock, before_delete=self._page_servers_done,
                                              spare_young=spare_young)
        finally:
            self._collecting -= 1
            if not self._collecting:
                self.gc["running_since"] = None
        self.gc["collections"] += 1
        self.gc["last"] = collected
        return collected

    async def _page_servers_done(self) -> None:
        while self.pages_coming:
            await next(iter(self.pages_coming.values())).wait()

    def _adopt(self, group: RunningGroup) -> None:
        self.groups[group.name] = group
        self.nursery.start_soon(self.run_checkpoints if group.settings.hz > 0 else self._wait_for_exit, group)

    # ----- group ops -----------------------------------------------------------------
    async def run_group(self, settings: GroupSettings, env: dict[str, str]) -> dict:
        groups.check_name(settings.name)
        if settings.name in self.groups and self.groups[settings.name].alive():
            raise GroupError(f"group {settings.name!r} is already running; pick another --name")
        if settings.volume != self.fs.volume_name:
            raise GroupError(f"this daemon serves volume {self.fs.volume_name!r}, not {settings.volume!r}")
        settings.mountpoint = self.mountpoint
        if settings.mode == "root":
            await self._prepare_root(self.mountpoint)
        group = await group_process.start(settings, env)
        try:
            commit = await self.checkpoint_retrying(group, "start")
        except BaseException as exc:
            ended = isinstance(exc, CheckpointError) and not group.alive()   # its own failure, not ours
            status = await _exit_status(group) if ended else None
            group.kill()
            if ended:
                raise GroupError(group_process.exited_at_once(settings, status)) from None
            raise
        self._adopt(group)
        return {"group": group.name, "pids": group.pids, "checkpoint": commit,
                "mountpoint": self.mountpoint, "output": settings.output}

    async def persist(self, pid: int, name: str, hz: float) -> dict:
        """Adopt an already running process tree as a new group (checkpointed from now on)."""
        groups.check_name(name)
        if name in self.groups and self.groups[name].alive():
            raise GroupError(f"group {name!r} is already running; pick another --name")
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
        except OSError:
            raise GroupError(f"no process {pid}") from None
        tree = with_descendants([pid])
        if os.getpid() in tree:
            raise GroupError(f"process {pid} is this slsfs daemon or one of its ancestors: its group's "
                             "checkpoints would freeze the daemon that takes them")
        for other in self.groups.values():
            if other.alive() and set(tree) & set(with_descendants(other.pids)):
                raise GroupError(f"process {pid} (or one of its descendants) is in group {other.name!r} "
                                 "already: a process belongs to one group")
        settings = GroupSettings(name, self.fs.volume_name, self.mountpoint, hz, argv, mode="persist")
        group = RunningGroup(settings, [pid], None)
        commit = await self.checkpoint_retrying(group, "persist")
        self._adopt(group)
        return {"group": name, "pids": [pid], "checkpoint": commit}

    async def restore_group(self, record: GroupCheckpoint, commit_id: int | None) -> RunningGroup:
        """Restore the group's processes; paths under its old mount point (and its output
        file) are remapped when this daemon mounts elsewhere (e.g. after `sls recv`)."""
        settings, remap = self._settings_here(record.settings)
        marks = [time.perf_counter()]          # where the time goes: restore_phases_ms in ps
        if settings.mode == "root":
            await self._prepare_root(settings.mountpoint)
        marks.append(time.perf_counter())
        stored = StoredImage(self.store, record.image)
        image = LoadedImage(self.store, record.image, self.tracer.in_trio, stored)
        lazy = stored.holds_pages(LAZY_MIN_BYTES // PAGE_SIZE)
        marks.append(time.perf_counter())
        # forked here, in the thread that owns the store: the server reads the fork's copy
        # of it (not a reopening, a scan of the active pack, that the first faults wait for)
        server = PageServer.start(stored, quiescent=True) if lazy else None
        marks.append(time.perf_counter())
        phases = {name: (end - start) * 1000 for name, start, end
                  in zip(("prepare_root", "open_image", "page_server_fork"), marks, marks[1:])}
        restored = await self._restore_processes(image, settings, remap, page_server=server, phases=phases)
        group = RunningGroup(settings, restored.pids[:1], restored, seq=record.seq,
                             last_checkpoint=commit_id, newest_checkpoint=commit_id, restored_from=commit_id,
                             restore_ms=round((time.perf_counter() - marks[0]) * 1000, 3),
                             restore_phases_ms={k: round(v, 2) for k, v in phases.items()})
        if restored.page_server is not None:
            self.pages_coming[group.name] = trio.Event()
            self.nursery.start_soon(self._watch_page_server, group.name, restored.page_server)
        self._adopt(group)
        log.info("restored group %s (pids %s) from checkpoint %s", group.name, group.pids, commit_id)
        return group

    async def restore_in_place(self, name: str, at: str | None, force: bool | None = None,
                               mountpoint: str | None = None) -> dict:
        """_restore_in_place, one at a time: restores asked at once (a second `sls restore`
        while the first runs) are done one after the other, each planned from the store as
        the one before left it and ending the group that one restored. (Overlapping, the
        second ended the mount under the first's group, uncounted, whose checkpoint then
        met the mount's descriptor closed: the daemon died.) After one that failed (the
        daemon stops: `failed`) the next is refused."""
        async with self.restoring:
            if self.failed:
                raise GroupError(f"{self.failed}; the daemon is stopping: `sls restore {name}` again "
                                 f"starts a new one")
            return await self._restore_in_place(name, at, force, mountpoint)

    async def _restore_in_place(self, name: str, at: str | None, force: bool | None,
                                mountpoint: str | None) -> dict:
        """`sls restore GROUP|CHECKPOINT` answered by this running daemon (a roll back, or
        a restore after the group alone crashed): what a new daemon started with --restore
        does (main), without that start (imports, store opening: ~250 ms). Every group is
        killed (the command asked the user first: --force), the mount is ended, the volume
        reset to the checkpoint's file system (reset_volume), mounted again at the same
        place (on the same device number when the old mount is gone: mount.device_number),
        and the groups restored from their images. {"in_place": False}, and nothing done,
        when the checkpoint's volume or mount point (`mountpoint`, if the command gives one;
        a group received from another store may come back at any mount of ours) is not
        ours: the command then stops us and starts a daemon there. Unless `force` is None (a
        command that asked `ps` and checked itself), other groups running refuse the
        restore, whatever the answer, when `force` is False (`others_running`): the
        command's one request. A failure after the mount has ended stops the daemon
        (`failed`: _serve_one ends it once the reply is out). With `force` False, a group
        named without `at` that runs already here is left as it is ("already_running": the
        restore after a crash brought it back with a partner, say a clone with another;
        a roll back names its checkpoint, a move its mount point)."""
        running = self.groups.get(name)
        if (force is False and at is None and running is not None and running.alive()
                and mountpoint in (None, self.mountpoint)):
            return {**self.status(), "in_place": True, "restored": name, "already_running": True}
        plan = plan_restore(self.store, name, at)
        settings = plan.record.settings
        if force is False:
            groups.others_running(str(self.store.path), settings.name,
                                  [g.name for g in self.groups.values() if g.alive() and g.name != settings.name])
        if (settings.volume != self.fs.volume_name
                or (groups.ran_from(settings, self.store.path) and settings.mount_root() != self.mountpoint)
                or (mountpoint is not None and mountpoint != self.mountpoint)):
            return {"in_place": False, "daemon": os.getpid()}
        phases = Startup()                     # (where its time goes: logged)
        running = [g for g in self.groups.values() if g.alive()]
        for group in self.groups.values():
            group.replaced = True
        self.kill_groups()
        async with self.lock:
            await self._end_groups(running)
            await self._page_servers_done()
            phases.done("end_groups")
            device = mount_device(self.mountpoint)
            try:
                os.close(self.mount_fd)
                self.mount_fd = -1
                self._serving.cancel()
                await self._served.wait()
                phases.done("unmount")
                self.fs.close(durable=False)       # (reset_volume's durable commit covers it)
                phases.done("close")
                restore = reset_volume(self.store, plan)
                phases.done("reset_volume")
                self.fs = group_filesystem(self.store, settings.volume)
                self.groups.clear()
                phases.done("open_volume")
                self.device_minor = int(device.split(":")[1]) if device else None
                await self.nursery.start(self._serve)
                self.mount_fd = await trio.to_thread.run_sync(os.open, self.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
                phases.done("mount")
                for record, commit_id in restore:
                    await self.restore_group(record, commit_id)
                phases.done("restore")
            except (CheckpointError, GroupError, MountError, StoreError, OSError) as exc:
                self.failed = f"restore in place failed: {exc}"
                log.error("%s", self.failed)
                raise GroupError(f"{self.failed}; the daemon has stopped (see {LOG_NAME}): "
                                 f"`sls restore {name}` again starts a new one") from None
        log.info("restored group %s in place in %.1f ms (%s)", name, sum(phases.phases.values()),
                 ", ".join(f"{k} {v:.1f}" for k, v in phases.phases.items()))
        self.in_place_restore_ms = phases.phases
        self.nursery.start_soon(self._hand_root_to_syncfs_helper)
        self.restored = settings.name
        return {**self.status(), "in_place": True}

    async def clone_group(self, name: str, at: str | None, count: int) -> list[dict]:
        """Start `count` copies of a group checkpoint, each on its own O(1) clone of the
        checkpoint's file system (of the group's directory in it), grafted at
        `<mount>/<name>.clone<N>/`. Each copy is a group of its own, checkpointed at the
        rate of its origin (the first time at once, all together). `name` may be a
        checkpoint of a group instead (`sls restore CHECKPOINT --clone`: groups.resolve_named)."""
        record, commit, at = groups.resolve_named(self.store, name, at)
        name = record.settings.name
        origin = groups.files_commit_of(self.store, record)
        image = LoadedImage(self.store, record.image, self.tracer.in_trio)
        source = "/".join(filter(None, (f".sls/checkpoints/{origin.id}/fs", record.settings.directory)))
        started: list[RunningGroup] = []
        try:
            for _ in range(count):
                dest = self._free_clone_name(name)
                self.fs.clone(source, dest)
                settings, remap = self._settings_here(record.settings, name=dest, directory=dest)
                if settings.mode == "root":
                    await self._prepare_root(settings.mountpoint)
                restored = await self._restore_processes(image, settings, remap, share_listening_ports=True)
                started.append(RunningGroup(settings, restored.pids[:1], restored, restored_from=origin.id))
                log.info("clone %s of group %s (checkpoint %d): pids %s", dest, name, origin.id, restored.pids)
            for group in started:
                self.groups[group.name] = group
            await self.checkpoint_retrying(started[0], "clone")    # its partners: the other copies too
        except (CheckpointError, GroupError, OSError) as exc:
            for group in started:              # all or nothing: none of this request's copies runs
                await self._stop_group(group)
            if len(started) < count:
                raise GroupError(f"clone {len(started) + 1} of {count} could not start: {exc} (the copies "
                                 f"started before it were stopped; their directories stay under "
                                 f"{self.mountpoint})") from None
            raise GroupError(f"the first checkpoint of the {count} clone(s) failed: {exc} (a clone that exited "
                             f"says why in its output: {', '.join(g.settings.output for g in started)}); they were "
                             f"stopped, their directories stay under {self.mountpoint}") from None
        for group in started:
            self._adopt(group)
        return [{"group": g.name, "pids": g.pids, "directory": g.settings.mountpoint,
                 "checkpoint": g.last_checkpoint} for g in started]

    def _settings_here(self, old: GroupSettings, name: str | None = None,
                       directory: str | None = None) -> tuple[GroupSettings, dict[str, str]]:
        """A group's settings (`old`, from its checkpoint) as it runs from this daemon: in
        its directory of this mount (or `directory`, a clone's), named `name` (default
        its own), writing to `group-<name>.out` in this store; and the remapping of the
        paths its image holds (its old directory and output file: e.g. after `sls recv`
        into a store mounted elsewhere, or for a clone)."""
        name = name or old.name
        directory = old.directory if directory is None else directory
        settings = replace(old, name=name, directory=directory,
                           output=os.path.join(self.store.path, f"group-{name}.out"))
        settings.mountpoint = settings.in_mount(self.mountpoint)
        if old.mode != "root" and settings.mountpoint != (old.seen_at or old.mountpoint):
            # a clone, or a group restored at another mount: it sees its directory where it ran
            settings.seen_at = old.seen_at or old.mountpoint
        open(settings.output, "ab").close()
        # the image names the group's files by its directory, or by where it saw that (the
        # longer prefix first: the directory of a clone lies below where it sees it)
        pairs = ((old.seen_at, settings.mountpoint), (old.mountpoint, settings.mountpoint),
                 (old.output, settings.output))
        remap = {o: n for o, n in pairs if o and (o != n or old.seen_at)}
        return settings, remap

    async def _restore_processes(self, image: LoadedImage, settings: GroupSettings,
                                 remap: dict[str, str], share_listening_ports: bool = False,
                                 page_server: PageServer | None = None,
                                 phases: dict[str, float] | None = None) -> Restored:
        """Restore the processes of `image` in a new PID namespace; a `--root` group also in
        its own mount namespace, with its /proc mounted there and the host's mounts it does not
        use detached (rootfs.enter_restored); a group without --root gets a mount namespace only
        for the /proc of its PID namespace, and it keeps none of the FUSE mounts the group does
        not use (its own mount is one it uses: checkpointer.unused_mounts). Clones share their listening
        ports (SO_REUSEPORT: the kernel spreads connections among the copies). With a
        `page_server`, it fills their private memory while they run (checkpointer.lazy).
        `phases` gets where the time went (checkpointer.stopwatch names, milliseconds)."""
        rooted = settings.mode == "root"
        present_at = await trio.to_thread.run_sync(_presented, settings)   # (a path of our mount: not here)
        if settings.init:       # its binary may be gone (a new machine, a cleaned /var/lib)
            await trio.to_thread.run_sync(group_init.ensure_built)

        def restore_timed() -> Restored:
            with recording() as times:
                try:
                    return restore_image(image, new_pid_namespace=True, new_mount_namespace=rooted, remap=remap,
                                         share_listening_ports=share_listening_ports,
                                         page_server=page_server, keep_mounts_of=[settings.mountpoint],
                                         present_at=present_at)
                finally:
                    (phases if phases is not None else {}).update(times)
        started = time.perf_counter()
        restored = await self.tracer.run(restore_timed)
        if phases is not None:
            phases["tracer_trip"] = (time.perf_counter() - started) * 1000 - sum(
                v for k, v in phases.items() if k in TOP_RESTORE_PHASES)
        if rooted:
            await rootfs.enter_restored(settings.mountpoint, restored.pids, restored.launcher.pid)
        return restored

    async def _watch_page_server(self, name: str, server: PageServer) -> None:
        """Until the lazy restore's page server (our child) and its guard have exited: all
        pages are in, or the group is gone. Then its checkpoints may go ahead."""
        pidfd = os.pidfd_open(server.pid)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        while not server.reap(0):
            await trio.sleep(0.01)
        if server.exit_code:                     # (its own message is above: our stderr is this log)
            why = (f"its lazy restore could not serve its pages (the page server failed, exit status "
                   f"{server.exit_code}; the daemon's log says why) and its processes were killed: "
                   f"`sls restore {name}` again; a damaged chunk? `sls fsck {self.store.path}` names it, "
                   f"and --at an older checkpoint avoids it")
            if (group := self.groups.get(name)) is not None:
                group.ended_because = why
            log.error("group %s: %s", name, why)
        self.pages_coming.pop(name).set()
        if not server.exit_code:
            log.info("group %s: every page of its lazy restore is in", name)

    async def _prepare_root(self, root: str) -> None:
        if root not in self.roots:
            await rootfs.prepare(root)
            self.roots.add(root)

    async def _stop_group(self, group: RunningGroup) -> None:
        """Kill one group (its last durable checkpoint stays) and forget it."""
        group.kill()
        del self.groups[group.name]
        await self._release_root(group)

    async def _release_root(self, group: RunningGroup) -> None:
        """After `group` was killed: detach its root's mounts unless another group uses them."""
        root = group.settings.mountpoint
        if group.settings.mode == "root" and not any(
                g.settings.mountpoint == root and g.alive() for g in self.groups.values() if g is not group):
            await rootfs.release(root)
            self.roots.discard(root)

    def _free_clone_name(self, name: str) -> str:
        """`<name>.clone<N>` for the lowest N naming no directory of the mount, running group
        or group checkpoint of the store (an earlier clone's history stays its own)."""
        n = 1
        while True:
            candidate = f"{name}.clone{n}"
            try:
                self.fs.resolve_path(candidate)
            except MountError:
                if candidate not in self.groups and groups.ROOT_PREFIX + candidate not in self.store.roots():
                    return candidate
            n += 1

    def _group(self, name: str) -> RunningGroup:
        try:
            return self.groups[name]
        except KeyError:
            raise GroupError(f"no group {name!r} runs in this daemon (running: "
                             f"{', '.join(sorted(self.groups)) or 'none'}); see `sls ps`") from None

    async def handle(self, req: dict, interim: Callable[[dict], Awaitable[None]] | None = None) -> dict:
        """The reply to control request `req`; `interim` sends a line before it."""
        op = req.get("op")
        if req.get("v") != CONTROL_VERSION:
            return mount_daemon.answer(self.fs, req)      # it explains the version mismatch
        try:
            if op == "run":
                return {"ok": True, **await self.run_group(GroupSettings(**req["settings"]), req["env"])}
            if op == "group_checkpoint":
                group = self._group(req["group"])

                async def announce(number: int) -> None:
                    await interim({"interim": {"group": group.name, "number": number, "name": req.get("name")}})
                commit = await self.checkpoint_retrying(group, req.get("name") or "manual",
                                                        announce if req.get("interim") and interim else None)
                if req.get("name"):
                    self.store.tag(req["name"], commit)
                return {"ok": True, "group": group.name, "checkpoint": commit, "name": req.get("name")}
            if op == "barrier":
                group = self._group(req["group"])
                if group.error:        # its periodic checkpoints fail: no durable state is recent
                    await self._checkpoint_for_barrier(group)
                async with self.lock:            # a checkpoint under way has committed once we have it
                    newest = group.newest_checkpoint
                    head = self.store.head
                durable = await self.group_commit.durable(head.id if head else 0)
                if newest is not None:
                    group.last_checkpoint = max(group.last_checkpoint or 0, newest)
                return {"ok": True, "group": group.name, "checkpoint": group.last_checkpoint, "durable": durable}
            if op == "persist":
                return {"ok": True, **await self.persist(int(req["pid"]), req["name"], float(req["hz"]))}
            if op == "restore":
                return {"ok": True, **await self.restore_in_place(req["group"], req.get("at"), req.get("force"),
                                                                  req.get("mountpoint"))}
            if op == "clone_group":
                return {"ok": True, "clones": await self.clone_group(req["group"], req.get("at"), req["count"])}
            if op == "resolve_group":
                at = req.get("at")
                if req.get("checkpoint_names"):      # `group` may be a checkpoint of one (sls restore CKPT)
                    record, commit, at = groups.resolve_named(self.store, req["group"], at)
                else:
                    record, commit = groups.resolve(self.store, req["group"], at)
                return {"ok": True, "group": record.settings.name, "at": at,
                        "checkpoint": commit.id if commit else None}
            if op == "gc":
                return {"ok": True, **await self._collect(mount_daemon.prune_request(req))}
            if op == "ps":                   # `stored`: also the groups the store holds that do not run
                stored = {"stored_groups": groups.stored(self.store, self.groups)} if req.get("stored") else {}
                return {"ok": True, **self.status(), **stored}
            if op == "diff":
                return await mount_daemon.diff(self.fs, req, self._checkpoint_roots)
            if op == "stop_group":
                group = self._group(req["group"])
                await self._stop_group(group)
                async with self.lock:
                    groups.mark_stopped(self.store, group.name)
                    self.store.commit(f"group {group.name}: stopped", durable=False)
                await self.fs.barrier()
                return {"ok": True, "group": group.name}
            if op == "shutdown":             # the stop starts once this reply is out (_serve_one)
                return {"ok": True, "daemon": os.getpid()}
        except (GroupError, CheckpointError, StoreError) as exc:
            return {"ok": False, "error": str(exc)}
        return mount_daemon.answer(self.fs, req)

    def _checkpoint_roots(self, spec: str | int) -> tuple[int, dict]:
        """(id, roots) of a checkpoint for `sls diff` (slsfs.groups.diff_roots)."""
        return groups.diff_roots(self.store, spec)

    def status(self) -> dict:
        """The `ps` reply (without "ok"): this daemon, its mount and every group's status."""
        return {"daemon": os.getpid(), "store": str(self.store.path),
                "mountpoint": self.mountpoint, "volume": self.fs.volume_name,
                "durable": self.store.durable_id, "startup_ms": self.startup.phases,
                "group_commit_barriers": self.group_commit.barriers,
                "store_bytes_appended": self.store.packs.appended_bytes,
                "gc": self.gc,
                "groups": [g.status() for g in self.groups.values()],
                **({"restored": self.restored} if self.restored else {}),
                **({"in_place_restore_ms": self.in_place_restore_ms} if self.in_place_restore_ms else {})}

    async def stop(self) -> None:
        """Kill the groups (their last durable checkpoint stays), then unmount and exit."""
        watchdog = threading.Timer(STOP_WATCHDOG_S, _exit_now, args=(self.mountpoint,))
        watchdog.daemon = True
        watchdog.start()
        self.stopping = True
        running = [g for g in self.groups.values() if g.alive()]
        self.kill_groups()                     # first: a checkpoint under way ends at once (ProcessGone)
        async with self.lock:
            await self._end_groups(running)
        self.nursery.cancel_scope.cancel()

    async def _end_groups(self, running: list[RunningGroup]) -> None:
        """Under the lock: kill every group (their last durable checkpoints stay; the records
        of `running`, those that ran, say "daemon stopped"), serving their files until they
        are gone, then bring in what they left in the kernel's writeback cache and release
        their roots."""
        self.kill_groups()
        self._note_ends(running, "daemon stopped", None)
        deadline = time.monotonic() + STOP_WAIT_S
        for pid in [pid for g in self.groups.values() for pid in g.pids]:
            await until_exited(pid, max(0.0, deadline - time.monotonic()))   # (serving FUSE: the dying close files)
        with trio.move_on_after(STOP_WAIT_S):
            await self.fs.flush_kernel_writes()   # what is left in the writeback cache
        for group in self.groups.values():
            group.reap()
        for root in self.roots:            # before the FUSE unmount, which they would block
            await rootfs.release(root)
        self.roots.clear()

    def kill_groups(self) -> None:
        for group in self.groups.values():
            group.kill()

    async def _until_the_command_ends(self) -> None:
        """Until the command that started us (`sls restore`, told the group runs) has
        printed it and exited, for COMMAND_EXIT_WAIT_S at most: what we do next (the
        capture side's imports, the syncfs helper's interpreter start) runs at the
        daemon's raised share, and held the CPUs the command needed for its last steps
        (at its session's share: on the restore's path; measured at load 7.5-9, 10 pairs:
        from our answer to the command's exit 117 -> 99 ms, medians)."""
        if self.command:
            await until_exited(self.command, COMMAND_EXIT_WAIT_S)

    async def import_checkpoints(self) -> None:
        """Import what checkpoints need and a restore does not (CHECKPOINT_MODULES), in a
        worker thread once the daemon serves; then let checkpoints begin. Not before:
        after a crash that was on the restore's path (~9% of the daemon's imports); not
        at a first checkpoint in the trio thread: the application's file requests would
        wait for it. Every import of these by the trio thread waits for this one (two
        threads importing one chain of modules at once can find each other's half-made
        modules)."""
        await trio.to_thread.run_sync(_import_all, CHECKPOINT_MODULES)
        self.startup.done("checkpoint_imports")
        self.checkpoints_imported.set()

    # ----- control socket ------------------------------------------------------------
    async def _serve_one(self, stream: trio.SocketStream) -> None:
        request, reply = await exchange(stream, partial(self.handle, interim=partial(send_line, stream)), LOG_NAME)
        if self.failed:                      # (a restore in place that failed half-way)
            self.nursery.start_soon(self.stop)
        elif reply.get("ok") and request is not None and request.get("op") == "shutdown":
            self.nursery.start_soon(self.stop)

    async def serve_control(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with control_listener(self.store.path, backlog=64) as listener:
            task_status.started()
            while True:
                self.nursery.start_soon(self._serve_one, await listener.accept())

    async def _stop_on_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("signal %d: stopping", signum)
                self.nursery.start_soon(self.stop)

    async def main(self, restore: list[tuple[GroupCheckpoint, int | None]], ready) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self._serve)
            self.mount_fd = await trio.to_thread.run_sync(os.open, self.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
            self.startup.done("mount")
            nursery.start_soon(self._stop_on_signals)
            nursery.start_soon(self.run_retention)
            if restore:
                try:
                    for record, commit_id in restore:
                        await self.restore_group(record, commit_id)
                except (CheckpointError, StoreError, OSError) as exc:
                    self.failed = f"restore failed: {exc}"
                    log.error("%s", self.failed)
                    ready(f"error: {self.failed}")
                    nursery.cancel_scope.cancel()
                    return
                self.startup.done("restore")
            await nursery.start(self.serve_control)
            self.startup.done("control_socket")
            if restore:
                self.restored = restore[0][0].settings.name     # the group asked for
            ready(ready_line(self.status()))
            # the index a step at a time, once the command has its answer (steps begun before
            # the control socket delayed it: 5-24 ms of a 16 MiB Redis group's `sls restore`)
            nursery.start_soon(self.fs.build_store_index)
            if restore:
                await self._until_the_command_ends()
            nursery.start_soon(self.import_checkpoints)
            await self._hand_root_to_syncfs_helper()   # after the restore: its start would compete with it

    async def _serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve the mount until it is unmounted (then the daemon ends) or a restore in
        place ends this serving (`_serving` cancelled) to mount the volume again."""
        self._served = trio.Event()
        try:
            with trio.CancelScope() as serving:
                self._serving = serving
                # allow_other: a group's processes may run as other users (postgres, a web
                # server's workers); the kernel still checks every access (default_permissions)
                await self.fs.serve(self.mountpoint, allow_other=True, task_status=task_status,
                                    device_minor=self.device_minor, syncfs_helper=False, build_index=False)
        finally:
            self._served.set()
        if not serving.cancelled_caught:
            self.nursery.cancel_scope.cancel()

    async def _hand_root_to_syncfs_helper(self) -> None:
        """From now on the mount's syncfs helper syncfs()es our descriptor of its root
        (FileSystem.flush_through); its interpreter starts here."""
        try:
            await self.fs.flush_through(self.mount_fd)
        except OSError as exc:                   # (each checkpoint tries again, and fails with it)
            log.warning("the mount's syncfs helper did not start: %s", exc)


#: The modules of checkpoints (the capture side, retention, the processes' history
#: view), imported once the daemon serves (Daemon.import_checkpoints).
CHECKPOINT_MODULES = ("slsfs.group_checkpoint", "slsfs.group_retention", "slsfs.procs_view")


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        importlib.import_module(name)


def group_filesystem(store: Store, volume: str) -> FileSystem:
    """Volume `volume` of `store` as a group daemon serves it (see the module's
    simplifications), with the processes of each checkpoint in its history view."""
    fs = FileSystem(store, volume, checkpoint_interval_ms=None, writeback_cache=True, fsync_commits=False,
                    also_keep=_also_keep(store))
    fs.history.extensions["procs"] = _procs_view(store)
    return fs


def _procs_view(store: Store):
    """The `procs` extension of the mount's history tree (slsfs.procs_view), imported at
    its first use."""
    def procs(commit):
        from . import procs_view
        return procs_view.provider(store)(commit)
    return procs


def _also_keep(store: Store):
    """The FileSystem's `also_keep`: what group records need (slsfs.group_retention),
    imported at its first use (retention, GC)."""
    def needed(keep: set[int]) -> set[int]:
        from . import group_retention
        return group_retention.needed(store, keep)
    return needed


async def until_exited(pid: int, limit_s: float) -> None:
    """Until process `pid` has exited (at once if it has), or for `limit_s` seconds."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:                      # gone already
        return
    try:
        with trio.move_on_after(limit_s):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def _presented(settings: GroupSettings) -> tuple[str, str] | None:
    """(its directory, where its processes see it) for a group that sees its directory
    elsewhere (settings.seen_at: a clone; a group restored at another mount point), if that
    path is a directory here; else None, with a warning in the log: its processes then reach
    nothing through the paths they kept (a group received from another machine)."""
    if not settings.seen_at or settings.seen_at == settings.mountpoint:
        return None
    if not os.path.isdir(settings.seen_at):
        log.warning("group %s: %s, where its processes saw their directory, is no directory here: they "
                    "see it only at %s", settings.name, settings.seen_at, settings.mountpoint)
        return None
    return settings.mountpoint, settings.seen_at


def _exit_now(mountpoint: str) -> None:
    """The stop watchdog: the groups were SIGKILLed already (their last durable checkpoint
    stays); detach the mount (and what is mounted on it) and exit."""
    log.error("stop did not finish within %.0f s: exiting at once", STOP_WATCHDOG_S)
    logging.shutdown()
    _detach(mountpoint)
    os._exit(1)


def _detach(mountpoint: str) -> str:
    """Detach the mount on top of `mountpoint` (a lazy unmount, as `fusermount3 -u -z`);
    "" once done, else why not. As root (a daemon that runs groups is) with umount2
    itself: fusermount3's start took 7-20 ms of a restore after a crash."""
    if _libc.umount2(os.fsencode(mountpoint), MNT_DETACH) == 0:
        return ""
    if ctypes.get_errno() != errno.EPERM:
        return os.strerror(ctypes.get_errno())
    result = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True, timeout=10)
    return (result.stderr.strip() or "failed") if result.returncode else ""


def detach_stale(mountpoint: str, store_path: str) -> int | None:
    """Detach every mount of this store at `mountpoint` left by a killed daemon. We hold the
    store's writer lock, so no live daemon serves them. (A stat does not tell: the kernel
    answers it from cached attributes for a while after the daemon died.) The device minor
    of the one on top (the mount its processes used: ours is made on it again if it is
    free, mount.device_number), None if there was none."""
    target, store = os.path.realpath(mountpoint), os.path.realpath(store_path)
    top = None
    for _ in range(50):
        here = [m for m in slsfs_mounts() if m.mountpoint == target]
        if not here:
            return top
        if top is None and here[-1].device:
            top = int(here[-1].device.split(":")[1])
        if any(os.path.realpath(m.store) != store for m in here):
            raise GroupError(f"{mountpoint} is a mount of another store ({here[0].store}); "
                             "unmount it, or give another mount point (--mountpoint DIR)")
        orphans.stop_orphans({m.device for m in here if m.device})   # its groups, if they outlived it
        log.info("detaching the stale mount at %s", mountpoint)
        failed = _detach(mountpoint)
        if failed:
            log.warning("cannot detach %s: %s", mountpoint, failed)
            time.sleep(0.1)
    raise GroupError(f"{mountpoint} holds stale mounts that could not be detached; "
                     f"run `fusermount3 -u -z {mountpoint}`")


def detach_stale_holding(minor: int, store_path: str) -> None:
    """Detach the stale mounts of this store on device 0:`minor`, wherever they are: a group
    restored at another mount point than its checkpoint's (`sls mount DIR`, then `sls
    restore`, takes DIR over) wants its checkpoint's device number back, which its stale
    mount at the old place holds for as long as it stays attached (mount.device_number
    waited for it in vain). We hold the store's writer lock: no live daemon serves them.
    A mount with another on top of it stays (detaching its mount point would detach that)."""
    store, mounts = os.path.realpath(store_path), slsfs_mounts()
    for mount in mounts:
        on_top = [m for m in mounts if m.mountpoint == mount.mountpoint][-1] is mount
        if mount.device == f"0:{minor}" and os.path.realpath(mount.store) == store and on_top:
            orphans.stop_orphans({mount.device})
            log.info("detaching the stale mount at %s: it holds device 0:%d, the group's", mount.mountpoint, minor)
            failed = _detach(mount.mountpoint)
            if failed:
                log.warning("cannot detach %s: %s", mount.mountpoint, failed)


def detach_if_mounted(mountpoint: str) -> None:
    """After serving: make sure nothing is left mounted (pyfuse3 sometimes leaves the mount
    behind when restored processes used it; seen after `sls restore` + `sls stop`)."""
    if not any(m.mountpoint == mountpoint for m in slsfs_mounts()):   # (escapes decoded: a space is \040)
        return
    failed = _detach(mountpoint)
    log.info("detached %s left mounted after serving%s", mountpoint, f" ({failed})" if failed else "")


@dataclass
class RestorePlan:
    """What `sls restore NAME` brings back (plan_restore), before anything is changed."""
    record: GroupCheckpoint              # the group's checkpoint record
    commit: Commit | None                # the checkpoint it comes from (None: the group's newest)
    partners: list[GroupCheckpoint]      # the other groups checkpointed with it, which come back too


def plan_restore(store: Store, name: str, at: str | None) -> RestorePlan:
    """The group checkpoint `name` names (a group, or a checkpoint of one: `sls restore
    CHECKPOINT`, groups.group_at_checkpoint) at `at` (default: its newest durable), with
    its partners: the other groups that pair with the same files commit (checkpointed with
    it, unless `sls stop GROUP` ended them since), which come back with it since the
    volume's files are theirs too. A GroupError if it names nothing. Changes nothing: the
    mount point is checked (detach_stale) before reset_volume acts on the plan."""
    record, commit, at = groups.resolve_named(store, name, at)
    name = record.settings.name
    roots = store.roots() if at is None else commit.roots
    records, unreadable = groups.readable(store, roots)
    for other, why in unreadable.items():
        log.warning("group %s's checkpoint record cannot be read, so it is not restored with %s: %s", other, name, why)
    partners = [other for other in records.values() if other.settings.name != name
                and other.files_commit == record.files_commit and other.settings.volume == record.settings.volume
                and not groups.stopped(store, other.settings.name, roots)]
    return RestorePlan(record, commit, partners)


def reset_volume(store: Store, plan: RestorePlan) -> list[tuple[GroupCheckpoint, int | None]]:
    """Reset the plan's volume (and the clones grafted into it) to its checkpoint's file
    system and name that checkpoint as its groups' newest (before the mount starts); a
    clone made since stays in the store, no longer grafted. The groups to restore, each
    with the checkpoint's id."""
    record, commit = plan.record, plan.commit
    for volume, root in {record.settings.volume: record.fs, **record.clone_volumes}.items():
        if volume in store.volumes():
            store.drop_volume(volume)
        store.create_volume(volume, root)
    for restored in (record, *plan.partners):
        groups.save(store, restored)     # its newest again (unmarked if it had been stopped)
    names = " ".join(r.settings.name for r in (record, *plan.partners))
    store.commit(f"restore group {names} from checkpoint {commit.id if commit else '?'}", durable=True)
    return [(r, commit.id if commit else None) for r in (record, *plan.partners)]


async def _exit_status(group: RunningGroup, wait_s: float = 1.0) -> int | None:
    """The exit status of a group's command that has just ended, once its launcher has it
    (None after `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while (status := group.exit_status()) is None and time.monotonic() < deadline:
        await trio.sleep(0.01)
    return status


def main(argv: list[str] | None = None, startup: Startup | None = None, store: Store | None = None) -> int:
    """The daemon's life; `startup`: its start so far (a fork that imported us first);
    `store`: the store, opened already (slsfs.mount_daemon's hand-over; closed here)."""
    startup = startup or Startup()
    parser = argparse.ArgumentParser(prog="python -m slsfs.daemon")
    parser.add_argument("store")
    parser.add_argument("--mountpoint")
    parser.add_argument("--volume", default="main")
    parser.add_argument("--restore", metavar="GROUP")
    parser.add_argument("--at", metavar="CHECKPOINT")
    parser.add_argument("--or-new-at", metavar="MOUNTPOINT",
                        help="with --restore GROUP: if the store holds no checkpoint of GROUP, serve "
                             "--volume at MOUNTPOINT instead (sls run --resume)")
    parser.add_argument("--like", metavar="GROUP", help="mount where GROUP's newest checkpoint says")
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--command-pid", type=int, help="the command waiting for us (default: with --ready-fd, "
                                                         "our parent): see Daemon._until_the_command_ends")
    args = parser.parse_args(argv)
    os.environ["PATH"] = group_process.SYSTEM_PATH    # (its own programs: see there)
    mount_daemon.pace_collector()

    ready = mount_daemon.readiness_reporter(args.ready_fd)
    command = args.command_pid or (os.getppid() if args.ready_fd is not None else None)   # (waiting for us)
    mount_daemon.setup_logging(os.path.join(args.store, LOG_NAME))
    daemon_priority.raise_share()
    try:
        store = store or Store.open(args.store)
        startup.done("store_open")
    except (StoreError, OSError) as exc:
        ready(f"error: {exc}")
        return 1
    daemon = None
    try:
        plan, restore = None, []
        volume, mountpoint = args.volume, args.mountpoint
        try:                                    # a GroupError here: nothing changed, the command's error
            if args.or_new_at and groups.ROOT_PREFIX + args.restore not in store.roots():
                mountpoint = args.or_new_at     # (sls run --resume of a group with no checkpoint yet)
            elif args.restore:
                plan = plan_restore(store, args.restore, args.at)
                volume = plan.record.settings.volume
                mountpoint = mountpoint or groups.default_mount_root(plan.record.settings, args.store)
            elif args.like:                     # (a group, or a checkpoint of one: sls restore CKPT --clone)
                settings = groups.resolve_named(store, args.like, None)[0].settings
                volume, mountpoint = settings.volume, mountpoint or groups.default_mount_root(settings, args.store)
            if not mountpoint:
                raise GroupError("no mount point given")
            startup.done("plan_restore" if args.restore else "settings")
            stale_minor = detach_stale(mountpoint, args.store)   # (refuses another store's mount: before the reset)
            if not stale_minor and plan is not None and plan.record.device:
                detach_stale_holding(plan.record.device, args.store)
            startup.done("detach_stale")
        except GroupError as exc:               # (the command says it; `sls restore IMAGE` asks here first)
            ready(f"{REFUSED}{exc}")
            log.info("refused to start, nothing changed: %s", exc)
            return 1
        if plan is not None:
            restore = reset_volume(store, plan)
            startup.done("reset_volume")
        os.makedirs(mountpoint, exist_ok=True)
        daemon = Daemon(store, group_filesystem(store, volume), os.path.abspath(mountpoint), startup, command,
                        device_minor=stale_minor or (plan and plan.record.device))
        log.info("daemon %d: serving %s volume %s at %s", os.getpid(), args.store, volume, mountpoint)
        trio.run(daemon.main, restore, ready)
        daemon.kill_groups()
        daemon.fs.close()
        log.info("stopped; last checkpoint %s", store.head.id if store.head else None)
        return 1 if daemon.failed else 0
    except Exception as exc:
        failure = mount_daemon.sole_exception(exc)           # (trio's nurseries wrap it in groups)
        if isinstance(failure, (GroupError, MountError, StoreError, OSError, RuntimeError)):
            ready(f"error: {failure}")
            log.error("%s", failure)
        else:
            ready(f"error: {failure!r}")
            log.exception("daemon failed")
        return 1
    finally:
        if daemon is not None:
            daemon.kill_groups()
            detach_if_mounted(daemon.mountpoint)     # whatever ended us: no mount outlives us
            daemon.tracer.close()
        store.close()


def run(argv: list[str] | None = None, startup: Startup | None = None, store: Store | None = None) -> NoReturn:
    """main(argv, startup, store), then end the process at once: a thread still blocked in
    a request to our own (now unserved) mount must not keep it, and so the FUSE
    connection, alive."""
    code = main(argv, startup, store)
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
