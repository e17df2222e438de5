"""Capture the state of frozen processes.

What: `capture_all(frozen, sink, files)` returns the JSON-able metadata of every frozen
process (and zombie) of a tree, parents first: registers, signals, memory layout, fds,
credentials, limits... (see "Process images" in docs/FORMAT.md), and hands every memory
page that is not in its backing file to `sink(pid, addr, data)` in contiguous runs.
Why: capture knows the kernel, not the store; the image writer (image.py) decides where
pages go, files.py describes open files.

A mapping of a deleted file (a POSIX semaphore, sem_open()ed then unlinked, as Python's
multiprocessing does; a temporary file mapped then removed) is recorded like a memfd: its
contents go in the image and it comes back as a memfd that every process mapping it
shares. Simplifications (refused with a clear Unsupported error, never dropped): SysV shared
memory, seccomp strict mode (seccomp.py reads every thread's filters). A deleted file
on disk that is both mapped and open comes back as one file (files.py): the mapping's memfd
when a mapping of it was recorded first (its fds reopen that memfd), else the fd's unlinked file.
"""
from __future__ import annotations

import functools
import itertools
import os
import resource
import signal
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from . import aio, ipc_namespace, kernel, lazy, posix_timers, procfs, ptys, seccomp, sysv_msg
from .batch import OUT, Call, SyscallBatch
from .errors import ProcessGone, Unsupported
from .files import IO_URING, IO_URING_REFUSAL, POSIX_SHM_DIR, FileCapture
from .freeze import ALL_SIGNALS, Frozen, FrozenProcess, FrozenThread, due_stop, stack_scratch, syscall_insn_of
from .inject import Injector
from .pageread import copy_pages
from .stopwatch import phase

PageSink = Callable[[int, int, bytes], None]  # (pid as the process sees it, address, whole pages)
PageSelector = Callable[[int, procfs.Vma], "procfs.PageRanges | None"]

PR_GET_TID_ADDRESS, PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER, PR_GET_DUMPABLE = 40, 2, 37, 3
RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def saved_ranges(pid: int, vma: procfs.Vma) -> procfs.PageRanges | None:
    """The pages of a VMA a full image holds (None: none, its contents are elsewhere)."""
    kind = vma_kind(vma)
    if kind in ("vdso", "vvar", "vvar_vclock", "vsyscall", "aio"):
        return None
    if kind in ("shared_anon", "sysv_shm") or (kind in ("file", "memfd") and vma.shared):
        procfs.check_no_guard_pages(pid, vma)
        return None  # kept in the file, or (shared memory) in the image as a memfd record
    return procfs.dirty_ranges(pid, vma)


def capture_all(frozen: Frozen, sink: PageSink, files: FileCapture,
                select: PageSelector = saved_ranges, keep_injection_page: bool = False,
                selected: Callable[[int], None] | None = None,
                scanning: Callable[[int], bool] = lambda pid: False) -> list[dict]:
    """Metadata of every frozen process and zombie, parents before children.

    `select(host pid, vma)` names the pages of each VMA to hand to the sink (None: skip);
    `selected(host pid)`, if given, is told when every VMA of that process was selected
    (before its files, signals and threads are read: snapshot.PageCopy starts its copy then);
    `scanning(host pid)`: its written pages are still being looked for on the other CPU
    (sharedscan.py), so its fds are read first, while that scan goes on.
    `keep_injection_page`: leave the injected calls' page in each process for its next
    checkpoint (injection_page.py; the caller releases it when it stops checkpointing)."""
    with phase("process_tree"):
        ns_pids = {pid: procfs.ns_id(procfs.frozen_status(pid)["NSpid"]) for pid in frozen.processes}
        ns_pids.update({pid: procfs.ns_id(procfs.frozen_status(pid)["NSpid"]) for pid in frozen.zombies})

    def ns_ppid(pid: int) -> int:
        return ns_pids.get(int(procfs.frozen_status(pid)["PPid"]), 0)

    namespace = ipc_namespace.own_namespace(frozen.processes)   # its SysV segments are read in it
    with ipc_namespace.entered(namespace):
        result = [capture_process(proc, sink, files, ns_ppid(pid), select, keep_injection_page, selected,
                                  scanning(pid))
                  for pid, proc in frozen.processes.items()]
        result += [_zombie(pid, ns_pids[pid], ns_ppid(pid), status) for pid, status in frozen.zombies.items()]
        files.check_peers()
        if namespace is None:
            sysv_msg.refuse_used(frozen.processes)
        else:
            with phase("ipc_namespace"):
                result[0]["ipc"] = ipc_namespace.capture(files)      # version 20
    return result


def _zombie(pid: int, ns_pid: int, ppid: int, exit_status: int) -> dict:
    """The record of zombie `pid` (host PID), `ns_pid` as its namespace sees it."""
    status = procfs.frozen_status(pid)
    return {"pid": ns_pid, "ppid": ppid, "zombie": True, "exit_status": exit_status,
            "pgid": procfs.ns_id(status["NSpgid"]), "sid": procfs.ns_id(status["NSsid"]),   # version 9
            "comm": status["Name"]}                                                          # version 27


def capture_process(proc: FrozenProcess, sink: PageSink, files: FileCapture, ppid: int,
                    select: PageSelector = saved_ranges, keep_injection_page: bool = False,
                    selected: Callable[[int], None] | None = None, scanning: bool = False) -> dict:
    """The metadata of one frozen process (see capture_all); its pages go to `sink`. The
    pages are chosen right after the memory map is read, before the fds, signals and
    threads: a copy `selected` starts then runs while those are read. While its written
    pages are still being looked for on the other CPU (`scanning`: a large process,
    sharedscan.py) the fds are read first: choosing the pages waits for that scan, which
    then overlaps with the fds too, and the copy still overlaps with the signals and threads
    (2 GiB bench target, load 6-8.6: stop median 3.26 -> 2.85 ms with copier.py's short
    switch interval; at 10 MiB, no shared scan, the fds later cost 0.2 ms). (Our injected calls
    write nothing a copy then reads but the stack scratch area below the red zone, which
    no program may rely on, and the kernel's rseq fields, which it rewrites at the restore.)"""
    pid = proc.pid
    lazy.check_served(pid)
    with phase("proc_files"):
        status = procfs.frozen_status(pid)
        stat_fields = procfs.stat_fields(pid)
        vmas = procfs.maps(pid)
        limits = procfs.rlimits(pid)     # not prlimit(2): that needs CAP_SYS_RESOURCE for another uid
        meta = {
            "pid": procfs.ns_id(status["NSpid"]),
            "ppid": ppid,
            "pgid": procfs.ns_id(status["NSpgid"]),
            "sid": procfs.ns_id(status["NSsid"]),
            "host_pid": pid,
            "comm": status["Name"],
            "exe": os.readlink(f"/proc/{pid}/exe"),
            "cwd": os.readlink(f"/proc/{pid}/cwd"),
            "root": os.readlink(f"/proc/{pid}/root"),
            "creds": _creds(status),
            "umask": int(status.get("Umask", "022"), 8),
            "personality": procfs.number(pid, "personality", 16),
            "oom_score_adj": procfs.number(pid, "oom_score_adj"),
            "loginuid": procfs.loginuid(pid),                   # version 15
            "thp_disabled": status.get("THP_enabled") == "0",   # version 13: prctl(PR_SET_THP_DISABLE)
            "sched": _scheduling(proc.main, stat_fields),
            "rlimits": {name: list(limits[num]) for name, num in sorted(RLIMITS.items())},
            "mm": procfs.mm_layout(pid, stat_fields),
            "auxv": procfs.auxv(pid).hex(),
            "vmas": [_vma_meta(pid, v, files) for v in vmas if v.path != "[vsyscall]"],
        }
    if scanning:
        _fd_meta(pid, meta, files, stat_fields)
    with phase("page_scan"):     # every mapping first (clears before pages), then one copy in address order
        ranges = list(itertools.chain.from_iterable(select(pid, vma) or () for vma in vmas))
    if selected is not None:
        with phase("page_copy_start"):      # planning the copy made on the other CPU meanwhile
            selected(pid)
    if not scanning:
        _fd_meta(pid, meta, files, stat_fields)
    with phase("signals_threads_injected"):
        meta["pending_shared"] = [i.hex() for i in kernel.peek_siginfos(pid, shared=True)]
        meta["seccomp"] = seccomp.capture(pid, [proc.pid] + [t for t in proc.threads if t != proc.pid], status)
        meta.update(_injected_state(proc, status, keep_injection_page))
        _job_control_stop(proc, meta)
    if ranges:
        with phase("page_copy"):
            copy_pages(pid, ranges, functools.partial(sink, meta["pid"]))
    return meta


def _fd_meta(pid: int, meta: dict, files: FileCapture, stat_fields: list[str]) -> None:
    """The process's fds (and a session leader's controlling pty) into `meta`."""
    with phase("fds"):
        meta["fds"] = files.fd_records(pid)
        if meta["sid"] == meta["pid"] and (ctty := _controlling_pty(stat_fields)):
            meta["ctty"] = ctty


def _job_control_stop(proc: FrozenProcess, meta: dict) -> None:
    """Record the process as stopped if it is due to be once let go (freeze.due_stop: the
    stop it was found in, or a SIGSTOP that arrived while frozen and no SIGCONT after it):
    a restore stops it at its end. A SIGSTOP is left out of the pending signals: queued
    while a restored process is built, it would stop the building."""
    queues = [meta["pending_shared"]] + [thread["pending"] for thread in meta["threads"]]
    # a thread's pending list starts with the signals the freeze caught (_thread_meta):
    # due_stop weighs those by their order, the ones still in the kernel's queues apart
    caught = [0] + [len(thread.caught) for thread in _image_order(proc)]
    queued = {bytes.fromhex(info)[0] for queue, skip in zip(queues, caught) for info in queue[skip:]}
    stop = due_stop(proc, queued)
    if stop:
        meta["stopped"] = True
        meta["stop_signal"] = stop   # version 9
    for queue in queues:
        queue[:] = [info for info in queue if bytes.fromhex(info)[0] != signal.SIGSTOP]


def _controlling_pty(stat_fields: list[str]) -> dict | None:
    """A session leader's controlling pty ({pts: its index, foreground: the foreground
    process group as the process sees it, 0 if unknown}) from its stat_fields, or None."""
    index, tpgid = ptys.controlling(stat_fields)
    if index is None:
        return None
    try:   # the foreground group's id is its leader's pid, in the process's namespace
        foreground = procfs.ns_id(procfs.status(tpgid)["NSpid"]) if tpgid > 0 else 0
    except (ProcessGone, KeyError):   # its leader exited: the group stays in the background
        foreground = 0
    return {"pts": index, "foreground": foreground}


def _creds(status: dict[str, str]) -> dict:
    return {
        "uid": [int(x) for x in status["Uid"].split()],
        "gid": [int(x) for x in status["Gid"].split()],
        "groups": [int(x) for x in status.get("Groups", "").split()],
        "caps": {name: int(status[key], 16) for name, key in _CAPABILITY_SETS},
    }


_CAPABILITY_SETS = (("effective", "CapEff"), ("permitted", "CapPrm"), ("inheritable", "CapInh"),
                    ("bounding", "CapBnd"), ("ambient", "CapAmb"))


def _scheduling(main: FrozenThread, stat_fields: list[str]) -> list[int]:
    """[policy (with SCHED_RESET_ON_FORK, which /proc does not show), real-time priority,
    nice] of the main thread: its own, not the real-time policy the freeze may run it with;
    SCHED_DEADLINE's flags, runtime, deadline and period follow (version 16)."""
    if main.policy is not None:      # raised by the freeze (freeze._boost): not real-time of its own
        return [main.policy, 0, int(stat_fields[18])]
    policy = os.sched_getscheduler(main.tid)
    sched = [policy, int(stat_fields[39]), int(stat_fields[18])]
    if policy & ~os.SCHED_RESET_ON_FORK == kernel.SCHED_DEADLINE:
        sched += kernel.sched_deadline(main.tid)
    return sched


def vma_kind(vma: procfs.Vma) -> str:
    if vma.special:
        return vma.path.strip("[]")
    if aio.is_ring(vma):
        return "aio"
    if vma.path.startswith("/memfd:"):
        return "memfd"
    if vma.path.startswith("/SYSV"):
        return "sysv_shm"
    if vma.path.endswith(procfs.DELETED):
        if vma.path.startswith("/dev/zero") and vma.shared:
            return "shared_anon"
        if _linked_path(vma) is None:
            return "memfd"  # its contents are in the image
    if vma.file_backed:
        return "file"
    if vma.shared:
        return "shared_anon"
    return "anon"


def _linked_path(vma: procfs.Vma) -> str | None:
    """The path of a file the kernel shows as deleted when that name in fact still leads to
    it (a FUSE file system dropped a cached name); None if it was unlinked."""
    path = vma.path[: -len(procfs.DELETED)]
    try:
        return path if os.stat(path).st_ino == vma.inode else None
    except OSError:
        return None


def _code_file_identity(pid: int, vma: procfs.Vma) -> list[int] | None:
    """[size, mtime in ns] of the file an executable mapping maps (through map_files: the
    very file mapped, whatever its path now names, in whatever root the process sees), or
    None if it cannot be read (no privilege for map_files). Code is read back from its file
    at restore: a program or library replaced since (an upgrade, a rebuild) would run other
    code at the restored addresses, so the restore compares it (builder.Builder)."""
    try:
        st = os.stat(f"/proc/{pid}/map_files/{vma.start:x}-{vma.end:x}")
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


# The records of mappings that depend on nothing but their line in /proc/PID/maps (private
# and special ones, files that are not deleted), by pid and that line: a process keeps most
# of its hundreds of mappings from one checkpoint to the next.
_PLAIN_VMA_METAS: dict[tuple, dict] = {}
PLAIN_VMA_METAS_REMEMBERED = 65536


def _vma_meta(pid: int, vma: procfs.Vma, files: FileCapture) -> dict:
    key = (pid, vma.start, vma.end, vma.perms, vma.offset, vma.inode, vma.path)
    if (known := _PLAIN_VMA_METAS.get(key)) is not None:
        return dict(known)
    meta = _new_vma_meta(pid, vma, files)
    if meta["kind"] not in ("memfd", "shared_anon", "sysv_shm") and "posix_shm" not in meta \
            and not vma.path.endswith(procfs.DELETED):
        if len(_PLAIN_VMA_METAS) >= PLAIN_VMA_METAS_REMEMBERED:
            _PLAIN_VMA_METAS.clear()
        _PLAIN_VMA_METAS[key] = dict(meta)
    return meta


# VmFlags (smaps) a restore gives a mapping again, by their names in the image: what a
# fork does with it (MADV_WIPEONFORK: the child's copy is empty, as random-number state of
# OpenSSL/BoringSSL/LibreSSL wants; MADV_DONTFORK: no copy), MAP_DROPPABLE memory (the
# kernel may free its pages at any time: glibc's getrandom state), memory locked in RAM
# (mlock, MAP_LOCKED, MLOCK_ONFAULT: keys that must not reach swap, real-time programs),
# kept out of core dumps (MADV_DONTDUMP: secrets), reserved without swap accounting
# (MAP_NORESERVE: a sanitizer's or runtime's huge sparse reservation, which strict
# overcommit refuses otherwise), and the access and huge-page advice programs give
# (MADV_SEQUENTIAL, MADV_RANDOM, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_MERGEABLE).
KEPT_VM_FLAGS = {"wf": "wipeonfork", "dc": "dontfork", "dp": "droppable", "lo": "locked", "lf": "lockonfault",
                 "dd": "dontdump", "nr": "noreserve", "sr": "sequential", "rr": "random", "hg": "hugepage",
                 "nh": "nohugepage", "mg": "mergeable"}


def _new_vma_meta(pid: int, vma: procfs.Vma, files: FileCapture) -> dict:
    kind = vma_kind(vma)
    if kind == "aio":   # version 13: made again from its record, nothing of it in the pages
        return {"start": vma.start, "end": vma.end, "prot": vma.perms[:3], "shared": True, "offset": 0,
                "path": vma.path, "kind": kind, "growsdown": False, "aio": aio.ring_record(pid, vma)}
    if vma.path == IO_URING:     # (its fd may be closed: the rings stay mapped)
        raise Unsupported(f"process {pid}: {IO_URING_REFUSAL}")
    if kind == "file" and not vma.path.startswith("/"):
        raise Unsupported(f"process {pid}: its mapping {vma.start:#x}-{vma.end:#x} is of {vma.path}, which "
                          "cannot be mapped again at restore (only files, memfds and anonymous or shared "
                          "memory can: a socket's TCP zero-copy receive area, say, cannot)")
    path = _linked_path(vma) if kind == "file" and vma.path.endswith(procfs.DELETED) else vma.path
    meta = {
        "start": vma.start, "end": vma.end, "prot": vma.perms[:3], "shared": vma.shared,
        "offset": vma.offset, "path": path, "kind": kind,
    }
    flags = procfs.vm_flags(pid, vma) if kind not in ("vdso", "vvar", "vvar_vclock") else frozenset()
    meta["growsdown"] = "gd" in vma.flags or "gd" in flags   # a stack, or any MAP_GROWSDOWN mapping
    if kind == "file" and vma.shared and "w" not in meta["prot"] and "mw" in flags:
        meta["may_write"] = True    # version 5: mprotect(PROT_WRITE) allowed later, its file opened O_RDWR
    if kept := [name for flag, name in KEPT_VM_FLAGS.items() if flag in flags]:
        meta["vm_flags"] = kept     # version 9
    if kind == "file" and "x" in vma.perms and not vma.shared and path:   # (not a JIT's double mapping)
        identity = _code_file_identity(pid, vma)
        if identity:
            meta["file_id"] = identity   # version 9: the restore refuses a changed program or library
    if meta["kind"] in ("memfd", "shared_anon"):  # shared anonymous memory is a shmem file too
        name = "shared-anon" if kind == "shared_anon" else None
        meta["memfd"] = files.memfd(vma.inode, vma.path, f"/proc/{pid}/map_files/{vma.start:x}-{vma.end:x}",
                                    name)
    elif meta["kind"] == "file" and vma.shared and vma.path.startswith(POSIX_SHM_DIR):
        meta["posix_shm"] = files.posix_shm(vma.inode, vma.path,
                                            f"/proc/{pid}/map_files/{vma.start:x}-{vma.end:x}")
    elif meta["kind"] == "sysv_shm":                   # the inode number of its file is the id
        meta["shm"] = files.sysv_shm(vma.inode, f"/proc/{pid}/map_files/{vma.start:x}-{vma.end:x}",
                                     f"process {pid}, mapping {vma.start:#x}")
    return meta


@contextmanager
def injecting(pid: int, thread: FrozenThread) -> Iterator[Injector]:
    """An injector into a frozen thread, signals blocked, its stack scratch area kept intact."""
    kernel.set_sigmask(thread.tid, ALL_SIGNALS)
    thread.touched = True
    inj = Injector(thread.tid, syscall_insn_of(pid), *stack_scratch(thread.regs), held=thread.caught)
    saved = inj.read(inj.scratch, inj.scratch_size)
    try:
        yield inj
    finally:
        inj.write(inj.scratch, saved)
        inj.close()


@dataclass
class _StateCalls:
    """The batch of `_injected_state` for one shape of process, and its calls by purpose."""
    batch: SyscallBatch
    brk: Call
    subreaper: Call
    dumpable: Call
    membarrier: Call
    actions: dict[int, Call]           # by signal number
    itimers: list[Call]
    times: list[Call]                  # timer_gettime of each POSIX timer, in /proc's order
    per_thread: list[tuple[Call, Call, Call]]   # (tid address, sigaltstack, pdeath signal), image order


# The batch of each process checkpointed again and again, by host pid, with what decides
# every call in it (its ignored and caught signals, POSIX timer ids, threads): the same
# calls each stop, built once, and the batch keeps its code for the injection page it last
# ran from (batch.py). 10 MiB bench target, alternating stop by stop (load 4-6): 2.19 ->
# 1.96, 1.87 -> 1.77, 1.87 -> 1.75 ms, lower in 108, 100, 99 of 150 pairs.
_STATE_BATCHES: dict[int, tuple[tuple, _StateCalls]] = {}
STATE_BATCHES_REMEMBERED = 1024    # processes (~4 KB each with a few handlers)


def _state_calls(proc: FrozenProcess, status: dict[str, str], timers: list[dict],
                 threads: list[FrozenThread]) -> _StateCalls:
    """The batch of calls that reads `proc`'s state from inside (see _injected_state),
    the one made at an earlier stop when everything it depends on is the same."""
    shape = (status["SigIgn"], status["SigCgt"], tuple(timer["id"] for timer in timers),
             tuple(t.tid for t in threads))
    known = _STATE_BATCHES.get(proc.pid)
    if known is not None and known[0] == shape:
        return known[1]
    nr, main = kernel.NR, proc.pid
    batch = SyscallBatch(proc.pid, int(status["SigIgn"], 16))
    handled = int(status["SigCgt"], 16) | int(status["SigIgn"], 16)
    calls = _StateCalls(
        batch,
        brk=batch.add(main, nr["brk"], 0),
        subreaper=batch.add(main, nr["prctl"], PR_GET_CHILD_SUBREAPER, OUT, out=4),
        dumpable=batch.add(main, nr["prctl"], PR_GET_DUMPABLE, 0, 0, 0, 0),
        membarrier=batch.add(main, nr["membarrier"], kernel.MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0),
        actions={sig: batch.add(main, nr["rt_sigaction"], sig, 0, OUT, 8, out=32)
                 for sig in range(1, 65) if handled >> (sig - 1) & 1},
        itimers=[batch.add(main, nr["getitimer"], which, OUT, out=32) for which in range(3)],
        times=[batch.add(main, posix_timers.NR_TIMER_GETTIME, timer["id"], OUT, out=32) for timer in timers],
        per_thread=[(batch.add(t.tid, nr["prctl"], PR_GET_TID_ADDRESS, OUT, out=8),
                     batch.add(t.tid, nr["sigaltstack"], 0, OUT, out=24),
                     batch.add(t.tid, nr["prctl"], PR_GET_PDEATHSIG, OUT, out=4)) for t in threads])
    if len(_STATE_BATCHES) >= STATE_BATCHES_REMEMBERED and proc.pid not in _STATE_BATCHES:
        _STATE_BATCHES.clear()
    _STATE_BATCHES[proc.pid] = (shape, calls)
    return calls


def _injected_state(proc: FrozenProcess, status: dict[str, str], keep_page: bool = False) -> dict:
    """State only readable from inside, all threads' calls in one batch (batch.py): brk,
    whether it is a child subreaper and dumpable, its membarrier registrations, signal handlers, interval and POSIX timers of the process; tid address and sigaltstack
    of each thread and the signal it gets when its parent dies. Then the thread state
    ptrace reads from outside."""
    timers = posix_timers.entries(proc.pid)
    threads = _image_order(proc)
    calls = _state_calls(proc, status, timers, threads)
    calls.batch.run(proc.threads, keep_page)
    for timer, call in zip(timers, calls.times):
        posix_timers.set_time(timer, call.output(f"timer_gettime({timer['id']})"))
    return {
        "brk": calls.brk.check("brk(0)"),
        "child_subreaper": struct.unpack("i", calls.subreaper.output("PR_GET_CHILD_SUBREAPER"))[0],
        "dumpable": calls.dumpable.check("PR_GET_DUMPABLE"),
        "membarrier": max(calls.membarrier.result, 0),   # the registrations (a kernel before 6.3 tells none)
        "sigactions": {str(sig): list(struct.unpack("QQQQ", call.output(f"rt_sigaction({sig})")))
                       for sig, call in calls.actions.items()},
        "itimers": [list(struct.unpack("qqqq", call.output("getitimer"))) for call in calls.itimers],
        "posix_timers": timers,
        "threads": [_thread_meta(proc.pid, thread, *thread_calls)
                    for thread, thread_calls in zip(threads, calls.per_thread)],
    }


def _image_order(proc: FrozenProcess) -> list[FrozenThread]:
    """The process's threads in the order the image lists them: the main thread first."""
    return [proc.main] + [t for t in proc.threads.values() if t is not proc.main]


def _thread_meta(pid: int, thread: FrozenThread, tid_address: Call, altstack: Call, pdeath: Call) -> dict:
    tid = thread.tid
    head, length = kernel.get_robust_list(tid)
    pending = [i.hex() for i in thread.caught + kernel.peek_siginfos(tid, shared=False)]
    dispatch = {"syscall_dispatch": thread.dispatch} if thread.dispatch else {}    # version 30
    return {
        "tid": procfs.ns_tid(pid, tid),
        "regs": thread.regs.to_dict(),
        "xstate": kernel.get_xstate(tid).hex(),
        "sigmask": thread.sigmask,
        "pending": pending,
        "rseq": thread.rseq,
        "robust_list": [head, length],
        "tid_address": struct.unpack("Q", tid_address.output("PR_GET_TID_ADDRESS"))[0],
        "sigaltstack": list(struct.unpack("QiiQ", altstack.output("sigaltstack"))),
        "pdeath_signal": struct.unpack("i", pdeath.output("PR_GET_PDEATHSIG"))[0],
        **dispatch,
    }
