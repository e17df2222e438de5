"""Recreate the processes of an image, as a tree, in a new PID namespace.

What: `restore(image)` starts a stub launcher (stub.py), makes it unshare a new PID
namespace and clones (injected clone3) a PID-1 reaper there, unless the image is a
whole namespace whose root is PID 1 itself. From there every process is cloned from
its restored parent with set_tid (so PIDs, parents, sessions and process groups are
the original ones), zombies are recreated by making their stub exit with the
recorded status, then each stub is turned into its process (builder.py), files are
shared exactly as they were (files.py), and everything is let go at once. An image of
processes that had an IPC namespace of their own gets a new one, with their SysV objects
made again under the same ids before any process is built (ipc_namespace.py).
The launcher and so every task of the restore are pinned to the restorer's CPU while
it injects (pinning.py), and get the restorer's own CPU affinity back at the end.
Why: the processes continue where they were, with the PIDs they had.

Simplifications: without a new PID namespace the original PIDs must be free; a
process group or session whose leader is not in the image is not recreated (warning).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

from . import inherited, ipc_namespace, kernel, lazy, removed_dirs, stub, tracees, unused_mounts
from .builder import PR_SET_NAME, ProcessBuilder, Remapper, clone, wait_event_stop
from .errors import CheckpointError
from .file_restore import FileRestorer
from .freeze import ALL_SIGNALS
from .inject import Injector
from .kernel import NR, PAGE_SIZE
from .lazy import PageServer, lazy_ranges, served_ranges
from .mount_table import within
from .pinning import Pinning
from .sessions import StandIns, leaders_first, stop_signal
from .stopwatch import phase

CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_SLAVE = 0x1000, 0x4000, 0x80000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
# restore's phases (checkpointer.stopwatch) that do not nest: together they are its time
TOP_RESTORE_PHASES = ("page_server_start", "launcher", "process_tree", "build", "finish", "let_go",
                      "after_let_go_unpin")
TRACE_OPTIONS = (kernel.PTRACE_O_TRACESYSGOOD | kernel.PTRACE_O_TRACEFORK | kernel.PTRACE_O_TRACEVFORK
                 | kernel.PTRACE_O_TRACECLONE | kernel.PTRACE_O_EXITKILL | kernel.SUSPEND_SECCOMP)


class ImageSource(Protocol):
    """What restore reads: metadata of processes and files, pages and blobs. An image
    may also offer `page_vectors(pid, skip_zero=True)` (StoredImage's shape), which restore
    then prefers: runs as lists of pages, zero pages of fresh memory left out; and
    `read_pieces(ids)`, a blob's chunks apart and read together (shared memory's contents)."""

    processes: list[dict]
    files: list[dict]

    def page_runs(self, pid: int) -> Iterator[tuple[int, bytes]]: ...

    def read_blob(self, ids: list[str]) -> bytes: ...


@dataclass
class Restored:
    """The restored processes (host PIDs, parents first) and the stubs that keep them company."""

    pids: list[int]
    launcher: subprocess.Popen
    ns_init: int | None  # host PID of PID 1 of the new namespace, when it is a stub
    warnings: list[str] = field(default_factory=list)
    page_server: PageServer | None = None  # lazy restore: serves pages until they are all in
    # time.perf_counter() when the last task was let go: the end of the restore as its
    # processes see it (the restorer gets its own CPU affinity and policy back after it,
    # and may then wait for the CPU a restored process took: several ms of a busy one's)
    running_at: float | None = None

    def kill(self) -> None:
        """SIGKILL the whole restored tree (PID 1 of a namespace takes all of it along),
        every task below the launcher too (stubs of a restore that failed), and release
        those still traced here (tracees.py: else each stays a zombie while we live)."""
        tasks = tracees.tasks_below(self.launcher.pid)
        for pid in ([self.ns_init] if self.ns_init else []) + self.pids + tasks + [self.launcher.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.launcher.wait()
        tracees.release(tasks)
        if self.page_server:
            self.page_server.kill()

    def wait(self, timeout: float | None = None) -> int:
        """Wait until every restored process (and so the launcher) has exited; the
        launcher's status: that of the PID 1 of the restored namespace (stub.py's reaper),
        or, when that is a stub, of the last of its children to exit."""
        status = self.launcher.wait(timeout)
        self.wait_pages_in()
        return status

    def wait_pages_in(self, timeout: float | None = None) -> bool:
        """Lazy restore: wait until every page is in and the page server has exited
        (True; False if `timeout` seconds passed first). Without lazy restore: True."""
        return self.page_server.reap(timeout) if self.page_server else True


def _stub_injector(tid: int) -> Injector:
    return Injector(tid, stub.STUB_SYSCALL, stub.STUB_SCRATCH, stub.STUB_SCRATCH_SIZE)


#: The names (comm) of the stubs that stay stubs while the restored processes run: the
#: launcher and a stub PID 1 of the restored namespace. Started from a memfd, a stub is
#: named after its fd's number ("14"), which told a user reading `ps` or `sls umount`'s
#: list of holders nothing. Their children (stubs becoming processes) take the name
#: until they get their own (ProcessBuilder).
LAUNCHER_NAME, NAMESPACE_INIT_NAME = b"sls-launcher", b"sls-ns-init"


def _named_stub_injector(tid: int, name: bytes) -> Injector:
    return _name(_stub_injector(tid), name)


def _name(inj: Injector, name: bytes) -> Injector:
    """Name the stub of `inj` `name` (at most 15 bytes: the kernel's comm)."""
    inj.check(NR["prctl"], PR_SET_NAME, inj.put(name + b"\0"), 0, 0, 0, what="PR_SET_NAME")
    return inj


def restore(image: ImageSource, *, new_pid_namespace: bool = True, remap: dict[str, str] | None = None,
            leave_stopped: bool = False, lazy: bool = False, new_mount_namespace: bool = False,
            share_listening_ports: bool = False, page_server: PageServer | None = None,
            keep_mounts_of: Iterable[str] = (), present_at: tuple[str, str] | None = None) -> Restored:
    """Restore every process of the image; returns once they run (or are stopped, if asked).

    `share_listening_ports`: listening (and bound datagram) inet sockets are made with
    SO_REUSEPORT, so that several copies of one image serve the same port side by side.

    `new_mount_namespace`: the processes get a private copy of the restorer's mount
    namespace (as `unshare --mount` makes one: nothing mounted in it shows outside), which
    the caller trims (slsfs.rootfs does for a --root group). Without it, the mount
    namespace a new PID namespace's /proc needs (_own_proc) loses the FUSE mounts the
    processes do not use (unused_mounts.py); `keep_mounts_of`: paths whose mounts stay all
    the same (the directory of a group).

    `present_at` = (DIRECTORY, PATH): the processes see DIRECTORY (a path of the restorer's,
    which `remap` leads their files to) at PATH too, in a mount namespace of their own
    (made for them if need be), once they are built: a clone of a group, restored in a
    copy of its origin's directory (or a group restored at another mount point), then
    reaches its own files through the absolute paths its memory holds, not its origin's;
    its working directory is set again, at PATH, so that getcwd() gives the path it had.

    `lazy` (image from load_image only): private anonymous memory is not written but served
    on first touch, and pushed in the background, by a page server (lazy.py).
    `page_server`: a lazy restore whose server the caller started for this image
    (PageServer.start; the daemon forks it from the thread that owns the store, so the
    server reads the fork's copy of the store instead of opening it again); killed with
    the processes if the restore fails."""
    live = [p for p in image.processes if not p.get("zombie")]
    if not live:
        if page_server:
            page_server.kill()
        raise CheckpointError("the image holds no live process to restore")
    by_pid = {p["pid"]: p for p in image.processes}
    roots = [p for p in image.processes if p["ppid"] not in by_pid]
    with phase("page_server_start"):
        server = page_server or (PageServer.start(image) if lazy else None)  # before pinning: runs anywhere
    try:
        with phase("launcher"):
            pinning = Pinning()  # the launcher and every task cloned from it start on our CPU
            launcher = stub.spawn()
    except BaseException:
        if server:
            server.kill()
        raise
    restored = Restored([], launcher, None, page_server=server)
    remapper = Remapper(remap or {})
    injectors: list[Injector] = []
    builders: list[ProcessBuilder] = []
    early: dict[int, ProcessBuilder] = {}   # parents built before their children (inherited.py)
    parents: dict[int, dict] = {}           # pid -> the record of the built parent it was cloned from
    ipc = ipc_namespace.Restoring(image.processes)    # before every process: its SysV objects
    files = FileRestorer(image.files, image.read_blob, remapper, restored.warnings, share_listening_ports,
                         getattr(image, "read_pieces", None))
    try:
        with phase("process_tree"):
            kernel.ptrace(kernel.PTRACE_SEIZE, launcher.pid, 0, TRACE_OPTIONS)
            kernel.ptrace(kernel.PTRACE_INTERRUPT, launcher.pid, 0, 0)
            wait_event_stop(launcher.pid)
            kernel.set_sigmask(launcher.pid, ALL_SIGNALS)
            top = _named_stub_injector(launcher.pid, LAUNCHER_NAME)
            helpers = [top]
            in_own_ns: Injector | None = None       # a task of the processes' own mount namespace
            own_proc = new_pid_namespace and not new_mount_namespace and not (len(roots) == 1
                                                                              and roots[0]["pid"] == 1)
            if new_mount_namespace or (present_at and not own_proc):
                _unshare_mounts(top)
                in_own_ns = top
            ipc.make(top, image.read_blob, restored.warnings)
            if new_pid_namespace:
                top.check(NR["unshare"], CLONE_NEWPID, what="unshare(CLONE_NEWPID)")
                if not (len(roots) == 1 and roots[0]["pid"] == 1):
                    restored.ns_init = clone(top, [1])
                    top = _named_stub_injector(restored.ns_init, NAMESPACE_INIT_NAME)
                    helpers.append(top)
                    if own_proc:
                        _own_proc(top)
                        in_own_ns = top
            injectors += helpers
            stand_ins = StandIns(image.processes, injectors, restored.warnings, _stub_injector)
            def memory_first(inj: Injector, meta: dict, cloned_by: Injector | None) -> None:
                parent = by_pid.get(meta["ppid"])
                if parent is not None and parent["pid"] in early and cloned_by is early[parent["pid"]].inj:
                    parents[meta["pid"]] = parent
                if server or not inherited.may_share(meta, image.processes):
                    return
                early[meta["pid"]] = builder = ProcessBuilder(inj, meta, remapper, restored.warnings,
                                                              parents.get(meta["pid"]))
                builder.build_memory(_pages_to_write(image, meta), files, lazy_ranges(meta), keep_stub=True)
                builder.wait_pages()
            stubs, zombies = _create_tree(top, roots, image.processes, restored, injectors, files.session_terminal,
                                          stand_ins, memory_first)
            stand_ins.join_groups(live + [meta for _, _, meta in zombies],
                                  {**stubs, **{meta["pid"]: inj for _, inj, meta in zombies}})
            stand_ins.dismiss()
            _make_zombies(zombies)
            files.stand_in = lambda pid: stand_ins.for_exited(top, pid)
        with phase("build"):
            for meta in live:
                builder = early.pop(meta["pid"], None) or ProcessBuilder(stubs[meta["pid"]], meta, remapper,
                                                                         restored.warnings, parents.get(meta["pid"]))
                builders.append(builder)
                if server:
                    ranges = served_ranges(meta)
                    builder.build(image.page_vectors(meta["pid"], outside=ranges + _dropped_ranges(meta),
                                                     skip_zero=True), files)
                    with phase("lazy_arm"):
                        server.arm(builder.inj, builder.tid, meta["pid"], ranges, namespace_init=restored.ns_init)
                else:
                    builder.build(_pages_to_write(image, meta), files, copy_ranges=lazy_ranges(meta))
            stand_ins.dismiss()
        with phase("finish"):
            if present_at:
                with phase("present_at"):
                    _present_at(in_own_ns, builders, *present_at)
            for builder in builders:
                builder.finish()
            if in_own_ns and not new_mount_namespace:      # (that one, the caller trims)
                with phase("detach_unused_mounts"):
                    unused_mounts.detach_unused_fuse(in_own_ns, restored.pids,
                                                     [*keep_mounts_of, present_at[1]] if present_at else keep_mounts_of)
            for helper in helpers:
                _become_reaper(helper.tid)
            if server:
                with phase("lazy_confirm"):
                    server.confirm()  # before anything runs: every process is served, marked and guarded
        files.finish()
        ipc.settle(restored.warnings)
        with phase("let_go"):
            for builder in builders:   # as it was (a job-control stop), or as asked
                if builder.meta.get("stopped"):
                    os.kill(builder.tid, stop_signal(builder.tid, builder.meta))
                elif leave_stopped:
                    os.kill(builder.tid, signal.SIGSTOP)
            tids = [t for b in builders for t in b.tids] + [h.tid for h in reversed(helpers)]
            for tid in tids:
                pinning.adopt(tid)
            pinning.release_tasks()  # their own affinities back while they are stopped
            for builder in builders:
                builder.deadline_scheduling()
                builder.syscall_dispatch()
            pinning.realtime()       # no task let go preempts us before the last one is let go
            for tid in tids:
                kernel.detach(tid)
                restored.running_at = time.perf_counter()   # the task may run (preempting us) at once
        with phase("after_let_go_unpin"):   # our own CPU back: the processes already run
            pinning.close()
        if server:
            server.started()
    except BaseException:
        restored.kill()
        raise
    finally:
        pinning.close()
        try:
            files.close()
        finally:
            ipc.leave()     # the calling thread back in its own IPC namespace
        for builder in builders + list(early.values()):
            builder.close()
        for inj in injectors:
            if inj not in [b.inj for b in builders]:
                inj.close()
    for warning in restored.warnings:
        print(f"sls restore: warning: {warning}", file=sys.stderr)
    return restored


def _own_proc(init: Injector) -> None:
    """Give the new PID namespace's init (and so every process restored under it) a mount
    namespace of its own, a slave of the restorer's (mounts made outside still show in it),
    with a /proc of the new PID namespace: a restored process reading /proc/<its PID> (a
    PID it kept: the host's /proc has another process there, or none) finds itself, as
    psutil, a JVM or `ps -p $$` expect. (The image's processes came from the host's PID
    namespace; a group that was a namespace of its own keeps the mounts it is given.) The
    FUSE mounts they do not use are detached from it once they are built (unused_mounts)."""
    init.check(NR["unshare"], CLONE_NEWNS, what="unshare(CLONE_NEWNS)")
    init.check(NR["mount"], 0, init.put(b"/\0"), 0, MS_REC | MS_SLAVE, 0, what="mount(/, MS_REC|MS_SLAVE)")
    proc, target = init.put(b"proc\0"), init.put(b"/proc\0", 16)
    init.check(NR["mount"], proc, target, proc, MS_NOSUID | MS_NODEV | MS_NOEXEC, 0, what="mount(proc, /proc)")


def _present_at(inj: Injector, builders: list[ProcessBuilder], directory: str, path: str) -> None:
    """Bind `directory` at `path` in the mount namespace of `inj`, the processes' (see
    restore's `present_at`), and move each process whose working directory `remap` led into
    `directory` to the same place under `path`, unless it has a root of its own or lost that
    directory (removed_dirs). What they hold open stays as opened: the same files, under
    `directory`'s name. Whatever another file system has mounted at `path` (the live mount
    of the store a group was received from) is detached there first: the processes use
    nothing of it, and their copy of it would keep it alive after its own unmount."""
    source, target = os.fsencode(directory) + b"\0", os.fsencode(path) + b"\0"
    ours, there = os.stat(directory).st_dev, f"/proc/{inj.tid}/root{path}"    # (`path` in their namespace)
    while _device(there) != ours and inj.call(unused_mounts.NR_UMOUNT2, inj.put(target),
                                              unused_mounts.MNT_DETACH) == 0:
        pass
    inj.check(NR["mount"], inj.put(source), inj.put(target, len(source)), 0, MS_BIND, 0,
              what=f"mount({directory}, {path}, MS_BIND)")
    seen = Remapper({directory: path})
    for builder in builders:
        cwd = builder.remap(builder.meta["cwd"])
        if builder.meta["root"] == "/" and within(cwd, directory) and not removed_dirs.is_removed(cwd):
            builder.inj.check(NR["chdir"], builder.inj.put(os.fsencode(seen(cwd)) + b"\0"),
                              what=f"chdir({seen(cwd)})")


def _device(path: str) -> int | None:
    """st_dev of `path`; None if it cannot be reached (a FUSE mount whose daemon is gone)."""
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def _unshare_mounts(inj: Injector) -> None:
    """Give the launcher (and so every process cloned from it) its own mount namespace,
    with no propagation back to the restorer's; unmounts from there still reach it (slave:
    private would keep every mount the host had at the restore alive in it, a FUSE
    mount's daemon serving on and its store locked, until the processes end)."""
    inj.check(NR["unshare"], CLONE_NEWNS, what="unshare(CLONE_NEWNS)")
    root = inj.put(b"/\0")
    inj.check(NR["mount"], 0, root, 0, MS_REC | MS_SLAVE, 0, what="mount(/, MS_REC|MS_SLAVE)")


def _pages_to_write(image: ImageSource, meta: dict) -> Iterator[tuple[int, list[bytes]]]:
    """The runs of pages restore writes: an image with page_vectors (a stored image, or
    one read through another thread) leaves out the zero pages of memory that is mapped
    afresh (zero already) without reading them. MAP_DROPPABLE memory is left empty."""
    pid, dropped = meta["pid"], _dropped_ranges(meta)
    if hasattr(image, "page_vectors"):
        return image.page_vectors(pid, outside=dropped, skip_zero=True)
    if not dropped:
        return ((addr, [data]) for addr, data in image.page_runs(pid))
    pages = ((addr + at, data[at:at + PAGE_SIZE]) for addr, data in image.page_runs(pid)
             for at in range(0, len(data), PAGE_SIZE))
    return ((addr, [page]) for addr, page in pages if not any(start <= addr < end for start, end in dropped))


def _dropped_ranges(meta: dict) -> list[tuple[int, int]]:
    return [(v["start"], v["end"]) for v in meta["vmas"] if lazy.dropped(v)]


def _create_tree(top: Injector, roots: list[dict], processes: list[dict], restored: Restored,
                 injectors: list[Injector], on_session: Callable[[Injector, dict], None], stand_ins: StandIns,
                 made: Callable[[Injector, dict, Injector], None],
                 ) -> tuple[dict[int, Injector], list[tuple[Injector, Injector, dict]]]:
    """Clone every process from its parent's stub (or a stand-in for its session's exited
    leader), parents first, sessions and own groups set; `on_session(stub, meta)` runs in
    each session leader before its children of that session exist. A child that stayed in
    the session its parent left (the parent forked, then called setsid()) is cloned before
    the parent's setsid(). `made(stub, meta, creator)` runs for each live process right
    after its clone (before any child of it exists)."""
    children: dict[int, list[dict]] = {}
    for meta in processes:
        children.setdefault(meta["ppid"], []).append(meta)
    stubs: dict[int, Injector] = {}
    zombies: list[tuple[Injector, Injector, dict]] = []
    queue: list[tuple[Injector, dict]] = []

    def make(parent: Injector, meta: dict) -> None:
        creator, flags = stand_ins.creator(parent, meta)
        inj = _stub_injector(clone(creator, [meta["pid"]], flags=flags))
        injectors.append(inj)
        stand_ins.note(inj, creator)
        if meta.get("zombie"):
            zombies.append((parent, inj, meta))
            if "comm" in meta:                          # version 27
                _name(inj, meta["comm"].encode()[:15])
            if meta.get("sid") == meta["pid"]:         # version 9: its session and group
                inj.check(NR["setsid"], what="setsid (a zombie)")
                stand_ins.note_setsid(inj, meta)        # until it exits, it clones its session's orphans
            elif meta.get("pgid") == meta["pid"]:
                inj.check(NR["setpgid"], 0, 0, what="setpgid (a zombie)")
            return
        restored.pids.append(inj.tid)
        stubs[meta["pid"]] = inj
        made(inj, meta, creator)
        later = children.get(meta["pid"], [])
        if meta["sid"] == meta["pid"]:
            left = stand_ins.session_of.get(inj.tid)
            staying = [left is not None and _stays_in(child, left, children) for child in later]
            for child, stays in zip(later, staying):
                if stays:
                    make(inj, child)
            later = [child for child, stays in zip(later, staying) if not stays]
            inj.check(NR["setsid"], what="setsid")
            stand_ins.note_setsid(inj, meta)
            on_session(inj, meta)
        elif meta["pgid"] == meta["pid"]:
            inj.check(NR["setpgid"], 0, 0, what="setpgid")
        queue.extend((inj, child) for child in leaders_first(later))

    queue.extend((top, meta) for meta in leaders_first(roots))
    while queue:
        make(*queue.pop(0))
    return stubs, zombies


def _stays_in(meta: dict, sid: int, children: dict[int, list[dict]]) -> bool:
    """Whether the process of `meta` must be cloned while its parent is still in session
    `sid`: it is in that session, or it makes its own after forking a process that is."""
    if meta.get("sid") == sid:
        return True
    return meta.get("sid") == meta["pid"] and any(_stays_in(child, sid, children)
                                                  for child in children.get(meta["pid"], []))


def _make_zombies(zombies: list[tuple[Injector, Injector, dict]]) -> None:
    """Let each zombie's stub die with the recorded wait status, then drop the parents' SIGCHLD."""
    for _, inj, meta in zombies:
        status = meta["exit_status"]
        kernel.set_sigmask(inj.tid, 0)
        if status & 0x7F:
            resource.prlimit(inj.tid, resource.RLIMIT_CORE, (0, 0))
            os.kill(inj.tid, status & 0x7F)
        else:
            stub.exit_when_let_go(inj.tid, (status >> 8) & 0xFF)
        try:
            kernel.detach(inj.tid)
        except ProcessLookupError:      # SIGKILL ends even a stopped tracee at once: collect
            kernel.waitpid(inj.tid, kernel.WALL)  # it as its tracer, so that its parent can
    deadline = time.monotonic() + 30
    for parent, inj, meta in zombies:
        while _state(inj.tid) != "Z":
            if time.monotonic() > deadline:
                raise CheckpointError(f"the zombie {meta['pid']} could not be recreated")
            time.sleep(0.001)
        inj.close()
        parent.take_pending(signal.SIGCHLD)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rpartition(")")[2].split()[0]


def _become_reaper(pid: int) -> None:
    regs = kernel.get_regs(pid)
    regs.rip, regs.orig_rax = stub.STUB_REAPER, 0xFFFFFFFFFFFFFFFF
    kernel.set_regs(pid, regs)
    kernel.set_sigmask(pid, 0)
