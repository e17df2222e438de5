"""The processes of one running persistence group: started fresh, or restored.

A fresh group is started as `unshare --pid --ipc -- timeout --foreground 0 CMD`: unshare
makes the namespaces and runs coreutils' timeout (0: no time limit), whose child CMD
becomes PID 1 of the new PID namespace, so a restore (which builds a new namespace too)
gives it back the same PID; its SysV semaphores, message queues and shared memory are in
an IPC namespace of its own, so that every checkpoint holds them all
(checkpointer.ipc_namespace). The group's process is that child, once it has exec'd CMD.
The launcher, timeout, waits for it and ends as it did, by the same signal too (`sls ps`:
"killed by signal 9"), as the restore's launcher does (checkpointer/stub.py). Not
`unshare --fork`: util-linux 2.38's turns a SIGKILL of its child (the OOM killer's, a
crash test's) into status 1 and writes "sigprocmask unblock failed" into the group's
output.

In `--root` mode the command also gets its own mount namespace (`unshare --mount`, slave
propagation: the host's unmounts reach it, its own mounts stay in it) and runs chroot()ed
into the mount (slsfs.rootfs). In `--cwd` mode it shares
the host's file system; its TMPDIR (unless set, or the mount point's path is long) is
`.sls-tmp` in the volume, so that its temporary files are checkpointed with it.

With `--init` (settings.init), PID 1 is sls-init (slsfs.group_init) and CMD its child,
PID 2: the group then lasts until its last process ends, so programs that daemonize
keep running; the group's process is sls-init.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from . import group_init, rootfs
from .groups import GroupError, GroupSettings

if TYPE_CHECKING:
    from .group_checkpoint import PageTracking

START_TIMEOUT_S = 30.0
RATE_KEPT_S = 10.0              # checkpoint times kept for `rate()` (which looks at the last 5 s at most)
GROUP_TMPDIR = ".sls-tmp"       # in the volume: TMPDIR of a --cwd group
# A Unix socket's path has at most 107 bytes, and programs make theirs in TMPDIR up to ~45
# bytes deeper (Python's multiprocessing: TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX; ssh-agent):
# a longer mount point keeps the host's /tmp (temporary files then outside checkpoints).
MAX_TMPDIR = 60


@dataclass
class RunningGroup:
    settings: GroupSettings
    pids: list[int]                           # host PIDs of the group's processes
    handle: object                            # subprocess.Popen (fresh) or checkpointer Restored
    seq: int = 0                              # its checkpoints: the newest one's number (#N, sls log)
    last_checkpoint: int | None = None        # commit id of the newest durable group checkpoint
    newest_checkpoint: int | None = None      # ... of the newest one, durable or not yet (slsfs.group_commit)
    restored_from: int | None = None
    error: str = ""
    stop_ms: list[float] = field(default_factory=list)
    durable_ms: list[float] = field(default_factory=list)     # freeze to durable, per checkpoint
    restore_ms: float | None = None
    restore_phases_ms: dict[str, float] | None = None   # where restore_ms went (checkpointer.stopwatch)
    started: float = field(default_factory=time.time)   # (unix time) started, or restored: its processes let go
    checkpoint_times: deque[float] = field(default_factory=deque)   # (time.monotonic) of the last RATE_KEPT_S
    _tracking: PageTracking | None = field(default=None, repr=False)   # incremental capture: `tracking`
    pages_last: int = 0                       # pages the last checkpoint copied
    pages_total: int = 0                      # ... and all of this daemon's checkpoints of the group
    precopied_last: int = 0                   # of which copied before its freeze (incremental.precopy)
    stop_phases_last: dict[str, float] = field(default_factory=dict)   # ms per phase of the last stop
    left_out_until: float = 0.0               # (monotonic) its capture failed in another group's checkpoint
    replaced: bool = False                    # ended by a restore in place (its end noted by that restore)
    ended_at: float | None = None             # (time.time) when the daemon found it ended
    ended_because: str = ""                   # why, when the daemon knows (its lazy restore failed)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def tracking(self) -> PageTracking:
        """The group's write tracking between checkpoints (incremental capture), made at
        its first use: a checkpoint's (slsfs.group_checkpoint, whose capture side a
        restoring daemon imports only once the restored processes run)."""
        if self._tracking is None:
            from .group_checkpoint import PageTracking
            self._tracking = PageTracking()
        return self._tracking

    def alive(self) -> bool:
        """Whether every root process of the group is there and not a zombie (asked before
        each checkpoint: one raw read of its stat, a third of Path.read_text's cost)."""
        for pid in self.pids:
            try:
                fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
            except OSError:
                return False
            try:
                stat = os.read(fd, 4096)
            except OSError:
                return False
            finally:
                os.close(fd)
            end = stat.rfind(b")")                  # (the command name may hold anything)
            if end < 0 or stat[end + 2:end + 3] in (b"Z", b"X"):
                return False
        return True

    def exit_status(self) -> int | None:
        """The exit status of a group once it has ended (as its launcher reports it, the
        status of the group's first process: the code, or minus the signal that killed it;
        sls-init gives 128 + the signal its command died of), else None. The launcher is
        `timeout` for a group started here, the restore's stub for a restored one."""
        launcher = getattr(self.handle, "launcher", self.handle)
        return launcher.poll() if isinstance(launcher, subprocess.Popen) and not self.alive() else None

    def reap(self) -> None:
        """Collect exited helper processes so that no zombie stays behind."""
        launcher = getattr(self.handle, "launcher", self.handle)
        if isinstance(launcher, subprocess.Popen):
            launcher.poll()

    def kill(self) -> None:
        """SIGKILL every process of the group (and its PID namespace), its launcher first
        (the group ends as killed, not as the launcher saw its PID 1 end). No waiting here:
        a dying process may need the daemon's FUSE loop to close its files (see `reap`)."""
        launcher = getattr(self.handle, "launcher", self.handle)
        if isinstance(launcher, subprocess.Popen):
            try:
                launcher.kill()
            except ProcessLookupError:
                pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def note_ended(self) -> None:
        """Note when the group was found ended (once: `ran_s` in status)."""
        if self.ended_at is None:
            self.ended_at = time.time()

    def rate(self, window_s: float = 5.0) -> float:
        """Checkpoints a second over the last `window_s` (or since the first of them, for a
        group younger than that: a group 2 s old was shown at 40% of its rate)."""
        now = time.monotonic()
        recent = [t for t in self.checkpoint_times if now - t <= window_s]
        return (len(recent) - 1) / (now - recent[0]) if len(recent) >= 2 else 0.0

    def note_checkpoint(self, stop_ms: float, durable_ms: float, pages: int,
                        stop_phases: dict[str, float], precopied: int) -> None:
        now = time.monotonic()
        self.pages_last, self.stop_phases_last, self.precopied_last = pages, stop_phases, precopied
        self.pages_total += pages
        self.stop_ms.append(stop_ms)
        self.durable_ms.append(durable_ms)
        del self.stop_ms[:-1000], self.durable_ms[:-1000]
        times = self.checkpoint_times
        times.append(now)
        while now - times[0] > RATE_KEPT_S:   # (not a new list of all of them: 1,000 at 100 Hz, each checkpoint)
            times.popleft()

    def status(self) -> dict:
        from checkpointer.procfs import with_descendants     # (imported by a restore already)
        stops, durables = sorted(self.stop_ms), sorted(self.durable_ms)
        running = self.alive()
        if not running:
            self.note_ended()
        return {
            "group": self.name, "running": running, "pids": self.pids, "argv": self.settings.argv,
            "processes": sorted(with_descendants(self.pids)) if running else [],
            "volume": self.settings.volume, "mountpoint": self.settings.mountpoint, "hz": self.settings.hz,
            "seen_at": self.settings.seen_at or self.settings.mountpoint,    # where its processes see it
            "checkpoints": self.seq, "rate_hz": round(self.rate(), 1), "last_durable": self.last_checkpoint,
            "restored_from": self.restored_from, "error": self.error, "ended_because": self.ended_because,
            "stop_ms_median": round(_median(stops), 3) if stops else None,
            "stop_ms_p99": round(stops[min(len(stops) - 1, int(len(stops) * 0.99))], 3) if stops else None,
            "stop_ms_last": round(self.stop_ms[-1], 3) if self.stop_ms else None,
            "durable_ms_median": round(_median(durables), 3) if durables else None,
            "restore_ms": self.restore_ms, "restore_phases_ms": self.restore_phases_ms,
            "pages_last": self.pages_last, "pages_total": self.pages_total, "precopied_pages_last": self.precopied_last,
            "stop_phases_ms_last": self.stop_phases_last, "exit_status": self.exit_status(),
            "ran_s": None if self.ended_at is None else round(self.ended_at - self.started, 2),
            "started": round(self.started, 4),
        }


def _median(ordered: list[float]) -> float:
    """The median of a sorted, non-empty list (as statistics.median, whose import, with
    fractions and decimal, cost a restoring daemon ~7 ms before its group ran)."""
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _temporary_directory(path: str) -> str:
    """The group's TMPDIR in `--cwd` mode (unless it has one, or the path would be too long):
    a directory of the volume, so that its temporary files are checkpointed with it (a
    compiler's /tmp/cc*.s, which the restored compiler looks for, is not: the host's /tmp
    is outside every checkpoint)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o1777)
    return path


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


_NOT_RUN_PREFIX = "timeout: failed to run command"   # what timeout(1) writes when its exec fails


def exited_at_once(settings: GroupSettings, status: int | None) -> str:
    """Why a group's command is gone as it starts: its exit status and the last line it
    wrote (a server refusing its configuration, say)."""
    try:
        with open(settings.output, "rb") as out:
            out.seek(max(0, os.fstat(out.fileno()).st_size - 4096))
            last = out.read().decode(errors="replace").strip().splitlines()[-1:]
    except OSError:
        last = []
    if last and status in (126, 127) and _NOT_RUN_PREFIX in last[0]:   # timeout(1) could not exec it
        return (f"could not run {settings.argv[0]}: {last[0].rsplit(': ', 1)[-1].strip()} (exit status {status}; "
                "give a path, or a command on the group's PATH)")
    said = f"; its last words: {last[0].strip()[:300]!r}" if last else ""
    return (f"{settings.argv[0]} exited at once with status {status if status is not None else '?'} "
            f"(see {settings.output}){said}")

# A Popen child of the daemon must not touch the daemon's own mount before its exec: Popen
# forks with vfork, and CPython 3.11.2 (Debian 12's) keeps the GIL until the child execs,
# so the trio thread that would answer the child's request waits for it: the daemon hangs.
# Hence the launcher's chdir into the mount is unshare's (--wd), after the exec, and the
# daemon's programs (unshare; umount, fusermount3, gcc: the daemon's own PATH) are found
# here, not along a PATH that may hold a directory of the mount (an application's bin/).
# A group's command keeps its PATH (unshare and timeout look it up after their exec).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


async def start(settings: GroupSettings, env: dict[str, str]) -> RunningGroup:
    """Start CMD in a new PID namespace with the mount as its working directory, or (mode
    "root", the root file system prepared by slsfs.rootfs) as its root in its own mount
    namespace."""
    root = settings.mountpoint if settings.mode == "root" else None
    init = await trio.to_thread.run_sync(group_init.ensure_built) if settings.init else None
    tmpdir = os.path.join(settings.mountpoint, GROUP_TMPDIR)
    if not root and "TMPDIR" not in env and len(tmpdir) <= MAX_TMPDIR:
        # (in a thread: the mkdir goes through the mount, which this thread serves)
        env = {**env, "TMPDIR": await trio.to_thread.run_sync(_temporary_directory, tmpdir)}
    command = rootfs.start_argv(root, settings.argv, init) if root else settings.argv
    if init and not root:
        command = [init, "--", *command]
    own_mounts = ["--mount", "--propagation", "slave"] if root else []   # (see restore._unshare_mounts)
    unshare = shutil.which("unshare", path=SYSTEM_PATH)     # (see SYSTEM_PATH: not Popen's child)
    if unshare is None:
        raise GroupError(f"unshare (util-linux) is not installed in {SYSTEM_PATH}: install util-linux")
    argv = [unshare, "--pid", "--ipc", *own_mounts, f"--wd={settings.mountpoint}", "--",
            "timeout", "--foreground", "0", *command]

    def spawn() -> subprocess.Popen:
        with open(settings.output, "ab") as out:
            return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
    launcher = await trio.to_thread.run_sync(spawn)   # (in a thread: the trio thread serves the mount meanwhile)

    def started(pid: int) -> bool:
        """Whether `pid`, the launcher's child, runs the command (or its init), in its root:
        it has exec'd, so its command line is no longer the launcher's."""
        if root:
            return rootfs.entered(pid, root, init)
        if init:
            return _exe(pid) == init
        return _cmdline(pid) not in (None, _cmdline(launcher.pid))

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        kids = _children(launcher.pid)
        if kids and started(kids[0]):
            if root:
                await rootfs.detach_late_mounts(root, launcher.pid, kids[:1])
            return RunningGroup(settings, [kids[0]], launcher)
        if launcher.poll() is not None:
            raise GroupError(exited_at_once(settings, launcher.returncode))
        await trio.sleep(0.005)
    launcher.kill()
    launcher.wait()
    raise GroupError(f"{settings.argv[0]} did not start within {START_TIMEOUT_S:.0f} s")
