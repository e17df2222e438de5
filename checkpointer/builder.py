"""Turn a restore stub into one process of an image.

What: `ProcessBuilder` drives a stopped stub clone (see restore.py) with injected
syscalls: vdso/vvar moved to their old addresses, every mapping recreated with
MAP_FIXED (these in three trips: callbatch.py), pages written by UFFDIO_COPY (fresh private anonymous
memory) or through /proc/PID/mem (by a second thread, pagewriter.py, while
the rest of `build` goes on; `finish` waits for them), fds installed (files.py), cwd/root,
name, umask, personality, PR_SET_MM_MAP (brk, arg/env, auxv, exe), signal handlers,
interval timers, rlimits; then threads (clone3 with set_tid), POSIX timers, per-thread robust list,
tid address, rseq, altstack, pending signals and credentials, and at last xstate,
registers (syscall-restart fix-up) and signal masks; seccomp filters go in last, and syscall user
dispatch when the restore lets the threads go (`syscall_dispatch`). Why: a stub has nothing to undo
(no libc state), so everything the process had is recreated exactly once.

Simplifications: files must exist at the paths in the image (or pass a `remap`); a
task stopped in a syscall with a restart block (nanosleep) sees -EINTR.
"""
from __future__ import annotations

import errno
import os
import resource
import signal
import struct
import time
from typing import Iterable, Iterator

from . import aio, inherited, kernel, posix_timers, procfs, removed_dirs, seccomp, stub, sysv_shm
from .errors import CheckpointError
from .file_restore import FileRestorer
from .freeze import ALL_SIGNALS, syscall_insn_of
from .callbatch import CALL_BYTES, CallBatch, run_all
from .inject import SYSCALL_INSN, Injector, restart_fixup
from .kernel import NR, PAGE_SIZE, Regs
from .pagewriter import PageWriter, register_fresh_memory
from .stopwatch import phase

MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_FIXED_NOREPLACE = 0x100, 0x100000
MAP_DROPPABLE = 0x08    # a mapping type (like MAP_PRIVATE), Linux 6.11
MAP_NORESERVE = 0x4000
MADV_DONTNEED = 4
# madvise(2) advice by image vm_flags name (version 9): WIPEONFORK, DONTFORK, DONTDUMP,
# SEQUENTIAL, RANDOM, HUGEPAGE, NOHUGEPAGE, MERGEABLE
ADVICE = {"wipeonfork": 18, "dontfork": 10, "dontdump": 16, "sequential": 2, "random": 1, "hugepage": 14,
          "nohugepage": 15, "mergeable": 12}
MLOCK_ONFAULT = 1
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
AT_FDCWD = -100
CLONE_PARENT = 0x00008000
O_RDONLY, O_RDWR = 0, 2
PR_SET_NAME, PR_SET_MM, PR_SET_MM_MAP = 15, 35, 14
PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, PR_SET_PDEATHSIG = 8, 24, 47, 2, 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
PR_SET_THP_DISABLE = 41
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SS_ONSTACK, SS_DISABLE = 1, 2
SPECIAL_KINDS = ("vvar", "vvar_vclock", "vdso")
# CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM
THREAD_FLAGS = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000


def wait_event_stop(pid: int) -> None:
    _, status = kernel.waitpid(pid)
    if not os.WIFSTOPPED(status) or status >> 16 != kernel.PTRACE_EVENT_STOP:
        raise CheckpointError(f"restore stub {pid} did not stop as expected (status {status:#x})")


def clone(parent: Injector, set_tid: list[int], flags: int = 0, exit_signal: int = signal.SIGCHLD) -> int:
    """Inject clone3: a stopped copy of the task (or a thread) with the given PID; returns its
    host TID. With CLONE_PARENT the child gets the caller's own exit signal (clone3 wants 0)."""
    if flags & CLONE_PARENT:
        exit_signal = 0
    tids = parent.put(struct.pack(f"{len(set_tid)}Q", *set_tid), 256)
    args = struct.pack("11Q", flags, 0, 0, 0, exit_signal, 0, 0, 0, tids, len(set_tid), 0)
    parent.children.clear()
    result = parent.call(NR["clone3"], parent.put(args), len(args))
    if result < 0:
        hint = " (that PID is taken here: restore into a new PID namespace)" if result == -17 else ""
        raise CheckpointError(f"cannot create a process with PID {set_tid[0]}: {os.strerror(-result)}{hint}")
    child = parent.children[0]
    wait_event_stop(child)
    kernel.set_sigmask(child, ALL_SIGNALS)
    return child


class Remapper:
    """Rewrites path prefixes (e.g. an old mount point to a new one)."""

    def __init__(self, prefixes: dict[str, str]):
        self.prefixes = sorted(prefixes.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, path: str) -> str:
        for old, new in self.prefixes:
            if path == old or path.startswith(old.rstrip("/") + "/"):
                return new.rstrip("/") + path[len(old.rstrip("/")):] if path != old else new
        return path


def _prot(perms: str) -> int:
    return (perms[0] == "r") * 1 | (perms[1] == "w") * 2 | (perms[2] == "x") * 4


def _last_cap() -> int:
    """The highest capability number this kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _find_gap(busy: Iterable[tuple[int, int]], size: int, start: int = 0x200000) -> int:
    candidate = start
    for lo, hi in sorted(busy):
        if candidate + size <= lo:
            break
        candidate = max(candidate, hi)
    return candidate


class ProcessBuilder:
    """Turns a stopped stub (a fresh clone, driven by `inj`) into the process `meta` describes.

    `build` does the process-wide part; `finish` (once every process of the tree is
    built, so files can still be shared) closes the spare fds, recreates the threads,
    sets per-thread state and credentials, and loads the registers.
    """

    def __init__(self, inj: Injector, meta: dict, remap: Remapper, warnings: list[str],
                 parent: dict | None = None):
        """`parent`: the image's record of the process whose built memory this one was
        cloned from (inherited.py: what is the same is kept, shared copy-on-write)."""
        self.inj, self.tid, self.meta, self.remap, self.warnings = inj, inj.tid, meta, remap, warnings
        self.kept = inherited.kept_ranges(meta, parent) if parent is not None else []
        self.memory_built, self.stub_kept = False, False
        self.threads: list[tuple[Injector, dict]] = [(inj, meta["threads"][0])]
        self.spares: list[int] = []  # fds held for sharing with other processes, closed in finish
        self.spare_base = max([f["fd"] for f in meta["fds"]] + [2]) + 1
        self.writer: PageWriter | None = None  # the pages being written (build -> finish)
        self.files: FileRestorer | None = None  # the image's files (build -> finish: locks)

    def build(self, pages: Iterator[tuple[int, list[bytes]]], files: FileRestorer,
              copy_ranges: list[tuple[int, int]] = ()) -> None:
        """Everything process-wide; `pages`: (address, the consecutive pages there) runs.
        `copy_ranges`: fresh private anonymous memory whose pages may go in by UFFDIO_COPY
        (pagewriter.py; nothing else may register a userfaultfd over them meanwhile)."""
        if not self.memory_built:
            self.build_memory(pages, files, copy_ranges)
        if self.stub_kept:      # its children are cloned by now; PR_SET_MM_MAP wants the old exe unmapped
            self.inj.check(NR["munmap"], stub.STUB_BASE, stub.STUB_SIZE, what="munmap(stub)")
            self.stub_kept = False
        with phase("files_and_process_state"):
            self.files = files
            self.spares += files.install(self, self.meta["fds"])
            files.controlling_terminal(self)
            self._mm_map()
            self._process_state()       # last: after a chroot, host paths no longer resolve
            self._process_signals()
            self._limits()

    def build_memory(self, pages: Iterator[tuple[int, list[bytes]]], files: FileRestorer,
                     copy_ranges: list[tuple[int, int]] = (), keep_stub: bool = False) -> None:
        """The mappings and their pages (the first part of `build`; alone, for a parent
        whose children are then cloned from it, once `wait_pages` returns: `keep_stub`,
        the stub's code stays mapped until `build`, for the stubs cloned from it)."""
        self.memory_built, self.stub_kept = True, keep_stub
        self._room_for_fds()
        with phase("mappings"):
            self.inj.check(NR["close_range"], 0, 0xFFFFFFFF, 0, what="close_range")
            current = self._move_to_helper_page()
            layout = self.batch()  # the stub's own mappings out, vdso & co moved: one trip
            for vma in current:
                in_stub = stub.STUB_BASE <= vma.start < stub.STUB_BASE + stub.STUB_SIZE  # code, scratch page
                if not vma.special and vma.start != self.helper and not (keep_stub and in_stub):
                    for start, end in inherited.outside(vma.start, vma.end, self.kept):
                        layout.add(NR["munmap"], start, end - start, what="munmap(stub)")
            self._move_specials(current, layout)
            layout.run()
            self._map_memory(files)
        with phase("pages"):
            # written by a second thread while we read the next pages and go on with the
            # rest: finish() waits for them (nothing before it reads the process's memory)
            unchanged = inherited.Unchanged(self.kept, self.inj.read) if self.kept else None
            if unchanged:
                copy_ranges = [r for r in copy_ranges if r not in self.kept]
                pages = unchanged.filter(pages)
            self.writer = PageWriter(self.tid, register_fresh_memory(self.inj, copy_ranges), copy_ranges)
            try:
                for addr, data in pages:
                    self.writer.write(addr, data)
                if unchanged:
                    dropping = self.batch()
                    for start, end in unchanged.to_drop(self.tid):
                        dropping = dropping.room()
                        dropping.add(NR["madvise"], start, end - start, MADV_DONTNEED,
                                     what=f"madvise({start:#x}, MADV_DONTNEED)")
                    dropping.run()
            except BaseException:
                self._wait_pages(quiet=True)
                raise

    def wait_pages(self) -> None:
        """Wait until the pages are written (a parent, before its children are cloned)."""
        self._wait_pages()

    def finish(self) -> None:
        with phase("pages_wait"):
            self._wait_pages()
        with phase("threads_and_registers"):
            self._finish()

    def _wait_pages(self, quiet: bool = False) -> None:
        """Wait until the pages are written; raise the writer's error unless `quiet` (the
        restore has failed already)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except CheckpointError:
                if not quiet:
                    raise

    def _finish(self) -> None:
        closes = self.batch()           # one trip (a few, for thousands of fds)
        for spare in self.spares:
            closes = closes.room()
            closes.add(NR["close"], spare, what="close(spare fd)")
        closes.run()
        if self.files is not None:
            self.files.retake_locks(self)
        self._create_threads()
        if self.files is not None:
            self.files.reopen_thread_pidfds(self)
        posix_timers.recreate(self.inj, self.meta.get("posix_timers", []))  # SIGEV_THREAD_ID needs the threads
        if kernel.SUSPEND_SECCOMP:      # before the credentials: installing may need privileges they drop
            self._seccomp()
        for inj, thread in self.threads:
            self._thread_state(inj, thread)
        self._dumpable()
        self._scheduling()
        self._sigtrap_action_back()
        self.inj.check(NR["munmap"], self.helper, self.helper_size, what="munmap(helper)")
        if not kernel.SUSPEND_SECCOMP:
            self._seccomp()
        self._registers()

    def _seccomp(self) -> None:
        """Each thread's filters (seccomp.py), from a syscall instruction in the vdso and
        scratch room below the main thread's stack: last, unless the tasks were seized with
        seccomp suspended (kernel.SUSPEND_SECCOMP), since later injected calls would have
        to pass them."""
        record = self.meta.get("seccomp", {"filters": [], "no_new_privs": False})
        if not record["filters"] and not record["no_new_privs"]:
            return
        size = 64 + seccomp.largest(record)
        rsp = self.meta["threads"][0]["regs"]["rsp"]
        inj = Injector(self.tid, syscall_insn_of(self.tid), (rsp - 128 - size) & ~0xF, size)
        try:
            seccomp.install(inj, [other for other, _ in self.threads], record)
        finally:
            inj.close()

    def close(self) -> None:
        self._wait_pages(quiet=True)
        for inj, _ in self.threads:
            inj.close()

    @property
    def tids(self) -> list[int]:
        """Host TIDs of the restored threads, main thread first."""
        return [inj.tid for inj, _ in self.threads]

    # memory layout ------------------------------------------------------------
    def _move_to_helper_page(self) -> list[procfs.Vma]:
        """Work from an area free in both layouts (a page for single injected calls, then
        room for batches of them), so the stub's own code and stack can go. Returns the
        stub's mappings."""
        current = procfs.maps(self.tid)
        vmas = self.meta["vmas"]
        batch_room = max(2 * CALL_BYTES * (len(vmas) + len(current)) + sum(len(v["path"]) + 16 for v in vmas),
                         (CALL_BYTES + 32) * (len(self.meta["sigactions"]) + len(self.meta["itimers"])),
                         CALL_BYTES * (12 + 2 * 64) + 128 + 4 * len(self.meta["creds"]["groups"]))   # a thread's state
        self.helper_size = PAGE_SIZE + -(-(batch_room + 1024) // PAGE_SIZE) * PAGE_SIZE
        busy = [(v["start"], v["end"]) for v in vmas] + [(v.start, v.end) for v in current]
        self.helper = _find_gap(busy, self.helper_size)
        self.inj.check(NR["mmap"], self.helper, self.helper_size, 7,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0, what="mmap(helper page)")
        self.inj.write(self.helper, SYSCALL_INSN)
        self.inj.syscall_addr = self.helper
        self.inj.scratch, self.inj.scratch_size = self.helper + 64, PAGE_SIZE - 64
        return current

    def batch(self, inj: Injector | None = None) -> CallBatch:
        """A batch of calls run by the main thread (or `inj`'s) from the helper area (after
        the helper page is mapped). The batch's int3 resets SIGTRAP's action: see
        `_sigtrap_action_back`."""
        return CallBatch(inj or self.inj, self.helper + PAGE_SIZE, self.helper_size - PAGE_SIZE)

    def _move_specials(self, current: list[procfs.Vma], batch_calls: CallBatch) -> None:
        """Move [vvar], [vvar_vclock] and [vdso] to the image's addresses (via a free area);
        one the image has not (the program unmapped it: zdtm's vdso02) is unmapped."""
        have = {v.path.strip("[]"): v for v in current if v.path.strip("[]") in SPECIAL_KINDS}
        want = {v["kind"]: v for v in self.meta["vmas"] if v["kind"] in SPECIAL_KINDS}
        if not set(want) <= set(have) or any(have[k].end - have[k].start != want[k]["end"] - want[k]["start"]
                                             for k in want):
            raise CheckpointError("the image was taken on a kernel with a different vdso layout; "
                                  "restore it on the kernel it was taken on")
        for kind in set(have) - set(want):
            vma = have.pop(kind)
            batch_calls.add(NR["munmap"], vma.start, vma.end - vma.start, what=f"munmap([{kind}])")
        busy = [(v["start"], v["end"]) for v in self.meta["vmas"]] + [(v.start, v.end) for v in have.values()]
        total = sum(v.end - v.start for v in have.values())
        temp = _find_gap(busy + [(self.helper, self.helper + self.helper_size)], total)
        moves = []
        for kind, vma in have.items():
            size = vma.end - vma.start
            moves.append((temp, want[kind]["start"], size))
            self._mremap(batch_calls, vma.start, temp, size)
            temp += size
        for now, final, size in moves:
            self._mremap(batch_calls, now, final, size)

    @staticmethod
    def _mremap(batch_calls: CallBatch, old: int, new: int, size: int) -> None:
        batch_calls.add(NR["mremap"], old, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, new,
                        what=f"mremap({old:#x} -> {new:#x})")

    def _map_memory(self, files: FileRestorer) -> None:
        """Every mapping of the image: shared memory and SysV segments one by one, then
        the files they map opened in one batch (once per file), then the mmaps (and the
        closes) in another."""
        opens, maps = self.batch(), []
        opened: dict[tuple[str, int], int] = {}  # (path, flags) -> index of its openat in `opens`
        attachments: dict[tuple[int, int], list[dict]] = {}   # (segment, address it was attached at) -> its pieces
        for vma in self.meta["vmas"]:
            if vma["kind"] == "sysv_shm":
                attachments.setdefault((vma["shm"], vma["start"] - vma["offset"]), []).append(vma)
        for vma in self.meta["vmas"]:
            kind = vma["kind"]
            if kind in SPECIAL_KINDS:
                continue
            size, prot = vma["end"] - vma["start"], _prot(vma["prot"])
            if kind in ("memfd", "shared_anon"):  # shared anonymous memory comes back as a memfd
                fd = files.local_fd(self, vma["memfd"], self.spare_base)
                flags = (MAP_SHARED if vma["shared"] else MAP_PRIVATE) | MAP_FIXED
                self.inj.check(NR["mmap"], vma["start"], size, prot, flags, fd, vma["offset"],
                               what=f"mmap of {vma['path']}")
                continue
            if kind == "sysv_shm":
                if pieces := attachments.pop((vma["shm"], vma["start"] - vma["offset"]), None):
                    self._attach_segment(files, pieces)
                continue
            if (vma["start"], vma["end"]) in self.kept:   # its parent's, inherited
                continue
            if kind == "aio":      # a placeholder, that the context's ring replaces (aio.recreate)
                maps.append((vma, size, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, None))
                continue
            if kind == "file":
                if "posix_shm" in vma:                 # gone after a reboot: made again
                    files.posix_shm(vma["posix_shm"])
                path = self.remap(vma["path"])
                key = (path, O_RDWR if vma["shared"] and ("w" in vma["prot"] or vma.get("may_write")) else O_RDONLY)
                if key not in opened:
                    opened[key] = opens.add(NR["openat"], AT_FDCWD, opens.put(path.encode() + b"\0"), key[1], 0,
                                            what=None)
                flags = (MAP_SHARED if vma["shared"] else MAP_PRIVATE) | MAP_FIXED
                maps.append((vma, size, prot, flags, key))
                continue
            flags = (MAP_DROPPABLE if "droppable" in vma.get("vm_flags", ()) else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED
            if "noreserve" in vma.get("vm_flags", ()):
                flags |= MAP_NORESERVE
            if vma["growsdown"]:
                flags |= MAP_GROWSDOWN
            maps.append((vma, size, prot, flags, None))
        fds = opens.run()
        for (path, _), index in opened.items():
            if fds[index] < 0:
                vma = next(v for v, *_, key in maps if key is not None and key[0] == path)
                raise CheckpointError(f"cannot reopen {path} for mapping {vma['start']:#x}: "
                                      f"{os.strerror(-fds[index])} (the file must exist where the image "
                                      "says, or pass a remap)")
        self._check_code_files(maps, {key: fds[index] for key, index in opened.items()})
        calls = []                           # (nr, args, what): as many trips as they need (run_all)
        for vma, size, prot, flags, key in maps:
            fd = fds[opened[key]] if key else -1
            calls.append((NR["mmap"], (vma["start"], size, prot, flags, fd, vma["offset"] if key else 0),
                          f"mmap of {key[0]}" if key else f"mmap({vma['start']:#x}, {size})"))
        calls += [(NR["close"], (fds[index],), "close (a mapped file)") for index in opened.values()]
        inaccessible_locks = []
        for vma in self.meta["vmas"]:        # version 9: the advice given, locked memory
            flags, size = vma.get("vm_flags", ()), vma["end"] - vma["start"]
            calls += [(NR["madvise"], (vma["start"], size, ADVICE[name]),
                       f"madvise({vma['start']:#x}, MADV_{name.upper()})") for name in flags if name in ADVICE]
            if "locked" in flags:
                what = f"mlock2({vma['start']:#x}, {size})"
                # mlock locks an inaccessible range, then answers ENOMEM as it cannot fault it in
                # (e.g. a guard page under mlockall(MCL_FUTURE)): checked below
                inaccessible = _prot(vma["prot"]) == 0                    # PROT_NONE
                if inaccessible:
                    inaccessible_locks.append((len(calls), what))
                calls.append((NR["mlock2"], (vma["start"], size, MLOCK_ONFAULT if "lockonfault" in flags else 0),
                              None if inaccessible else what))
        results = run_all(self.batch(), calls)
        for index, what in inaccessible_locks:
            if results[index] < 0 and results[index] != -errno.ENOMEM:
                raise CheckpointError(f"{what} failed in task {self.inj.tid}: {os.strerror(-results[index])}")
        aio.recreate(self.inj, self.meta["vmas"])

    def _attach_segment(self, files: FileRestorer, pieces: list[dict]) -> None:
        """Attach a SysV segment again as one attachment of it had been: `pieces`, its
        mappings (several when an mprotect of some pages split it; not the whole segment
        when munmap took some). The whole segment at the address it was attached at when
        the pieces cover it, else in an area free in both layouts, each piece moved to its
        address (mremap keeps its offset in the segment and its attachment, as shmdt wants)
        and the rest detached; then each piece's protection."""
        shmid = files.sysv_segment(pieces[0]["shm"])
        flags = 0 if any("w" in vma["prot"] for vma in pieces) else sysv_shm.SHM_RDONLY
        whole = -(-files.files[pieces[0]["shm"]]["size"] // PAGE_SIZE) * PAGE_SIZE
        attached_at = pieces[0]["start"] - pieces[0]["offset"]
        if sum(vma["end"] - vma["start"] for vma in pieces) == whole:    # (pieces of one attachment do not overlap)
            self.inj.check(sysv_shm.NR_SHMAT, shmid, attached_at, flags | sysv_shm.SHM_REMAP,
                           what=f"shmat of segment {shmid}")
        else:
            busy = [(v["start"], v["end"]) for v in self.meta["vmas"]] + [(v.start, v.end) for v in procfs.maps(self.tid)]
            attached = _find_gap(busy, whole)
            self.inj.check(sysv_shm.NR_SHMAT, shmid, attached, flags, what=f"shmat of segment {shmid}")
            kept = attached                 # the end of what is mapped or detached so far
            for vma in sorted(pieces, key=lambda v: v["offset"]):
                piece, size = attached + vma["offset"], vma["end"] - vma["start"]
                if piece > kept:
                    self.inj.check(NR["munmap"], kept, piece - kept, what=f"munmap of part of segment {shmid}")
                self.inj.check(NR["mremap"], piece, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, vma["start"],
                               what=f"mremap of part of segment {shmid}")
                kept = piece + size
            if attached + whole > kept:
                self.inj.check(NR["munmap"], kept, attached + whole - kept, what=f"munmap of part of segment {shmid}")
        for vma in pieces:
            if _prot(vma["prot"]) != _prot("rw-" if not flags else "r--"):
                self.inj.check(NR["mprotect"], vma["start"], vma["end"] - vma["start"], _prot(vma["prot"]),
                               what="mprotect (SysV segment)")

    def _check_code_files(self, maps: list, fds: dict[tuple[str, int], int]) -> None:
        """Refuse to map a program or library that is not the file the checkpoint mapped
        (its size or modification time differ, image version 9): its code is read from the
        file again, so the process would resume in other code (an upgraded package, a
        rebuilt binary) and crash or, worse, go on wrong. Each file is looked at through the
        process's own descriptor: the very file the mmap would map."""
        checked: set[tuple[str, int]] = set()
        for vma, *_, key in maps:
            if key is None or "file_id" not in vma or key in checked:
                continue
            checked.add(key)
            st = os.stat(f"/proc/{self.tid}/fd/{fds[key]}")
            size, mtime_ns = vma["file_id"]
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                then = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))
                now = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime_ns / 1e9))
                raise CheckpointError(
                    f"{key[0]}, whose code process {self.meta['pid']} runs (mapping {vma['start']:#x}), is not "
                    f"the file it was at the checkpoint ({size} bytes modified {then}; now {st.st_size} bytes "
                    f"modified {now}): an upgrade or a rebuild replaced it. Restore where the same file is "
                    "installed (or put it back), or start the program afresh")

    def open(self, path: str, flags: int, what: str, mode: int = 0) -> int:
        """openat() inside the process; a clear error if the file is not there."""
        result = self.inj.call(NR["openat"], AT_FDCWD, self.inj.put(path.encode() + b"\0"), flags, mode)
        if result < 0:
            raise CheckpointError(f"cannot reopen {path} for {what}: {os.strerror(-result)} "
                                  "(the file must exist where the image says, or pass a remap)")
        return result

    # process-wide state -------------------------------------------------------
    def _process_state(self) -> None:
        self._loginuid()        # through /proc/self: before a chroot
        root = self.remap(self.meta["root"])
        self._chdir(self.remap(self.meta["cwd"]))
        if root != "/":
            self.inj.check(NR["chroot"], self.inj.put(root.encode() + b"\0"), what=f"chroot({root})")
        self.inj.check(NR["prctl"], PR_SET_NAME, self.inj.put(self.meta["comm"].encode()[:15] + b"\0"),
                       what="PR_SET_NAME")
        self.inj.call(NR["umask"], self.meta["umask"])
        self.inj.call(NR["personality"], self.meta["personality"])
        if self.meta.get("child_subreaper"):           # version 5, as the one below
            self.inj.check(NR["prctl"], PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, what="PR_SET_CHILD_SUBREAPER")
        if self.meta.get("thp_disabled"):              # version 13
            self.inj.check(NR["prctl"], PR_SET_THP_DISABLE, 1, 0, 0, 0, what="PR_SET_THP_DISABLE")
        for command in kernel.MEMBARRIER_REGISTER_COMMANDS:    # version 8
            if self.meta.get("membarrier", 0) & command:
                self.inj.check(NR["membarrier"], command, 0, 0, what=f"membarrier(register {command:#x})")
        if self.meta.get("oom_score_adj"):
            try:
                with open(f"/proc/{self.tid}/oom_score_adj", "w") as adj:
                    adj.write(str(self.meta["oom_score_adj"]))
            except OSError as exc:      # lowering it takes CAP_SYS_RESOURCE
                self.warnings.append(f"process {self.meta['pid']}: its oom_score_adj "
                                     f"{self.meta['oom_score_adj']} could not be set again ({exc.strerror})")

    def _loginuid(self) -> None:
        """The audit login uid (version 15; set by sshd, login or systemd at a login, and
        inherited: audit records and loginctl name the user by it). The kernel takes it
        only from the process itself: written from inside, while it is still root (the
        credentials come last), when it differs from the one the stub inherited from us."""
        wanted = self.meta.get("loginuid")
        if wanted is None or procfs.loginuid(self.tid) in (wanted, None):
            return
        value = str(wanted).encode()
        fd = self.open("/proc/self/loginuid", os.O_WRONLY | os.O_CLOEXEC, "its audit login uid")
        result = self.inj.call(NR["write"], fd, self.inj.put(value), len(value))
        self.inj.call(NR["close"], fd)
        if result < 0:
            self.warnings.append(f"process {self.meta['pid']}: its audit login uid {wanted} could not be set "
                                 f"again ({os.strerror(-result)}; loginuid_immutable?)")

    def _mm_map(self) -> None:
        mm = self.meta["mm"]
        exe = self._open_exe()
        auxv = bytes.fromhex(self.meta["auxv"])
        auxv_addr = self.inj.put(auxv, 512)
        record = struct.pack("11QQII", mm["start_code"], mm["end_code"], mm["start_data"], mm["end_data"],
                             mm["start_brk"], self.meta["brk"], mm["start_stack"], mm["arg_start"],
                             mm["arg_end"], mm["env_start"], mm["env_end"], auxv_addr, len(auxv), exe)
        self.inj.check(NR["prctl"], PR_SET_MM, PR_SET_MM_MAP, self.inj.put(record), len(record), 0,
                       what="prctl(PR_SET_MM_MAP)")
        self.inj.check(NR["close"], exe)

    def _open_exe(self) -> int:
        """An fd on the executable; for one deleted (upgraded, removed) since the process
        started, on the memfd that holds its mapped contents (capture.py)."""
        exe = self.meta["exe"]
        if exe.endswith(procfs.DELETED):
            for vma in self.meta["vmas"]:
                if vma["path"] == exe and "memfd" in vma and self.files is not None:
                    local = self.files.local_fd(self, vma["memfd"], self.spare_base)
                    return self.open(f"/proc/self/fd/{local}", O_RDONLY, f"the executable {exe}")
            exe = exe[: -len(procfs.DELETED)]  # only marked deleted (a FUSE name dropped): still there
        return self.open(self.remap(exe), O_RDONLY, "the executable")

    def _chdir(self, cwd: str) -> None:
        """chdir into `cwd`; a working directory removed since is the removed directory the
        process holds open, if it does, or else one made again just for that
        (removed_dirs.stand_in), so that it is removed again and keeps its name."""
        if not removed_dirs.is_removed(cwd):
            self.inj.check(NR["chdir"], self.inj.put(cwd.encode() + b"\0"), what=f"chdir({cwd})")
            return
        if self.files is not None:
            for record in self.meta["fds"]:
                file = self.files.files[record["file"]]
                if file["kind"] == "dir" and self.remap(file["path"]) == cwd:
                    self.inj.check(NR["fchdir"], record["fd"], what=f"fchdir({cwd})")
                    return
        with removed_dirs.stand_in(cwd) as ghost:
            if ghost is None:
                self.warnings.append(f"process {self.meta['pid']}: its working directory {cwd} was removed and "
                                     f"no removed directory could be made for it: it works in / now")
            elif os.path.dirname(ghost) != os.path.dirname(cwd):
                self.warnings.append(f"process {self.meta['pid']}: its working directory {cwd} was removed and "
                                     f"cannot be made there again: it works in the removed {ghost} now")
            self.inj.check(NR["chdir"], self.inj.put((ghost or "/").encode() + b"\0"), what=f"chdir({cwd})")

    # signals, threads ---------------------------------------------------------
    def _process_signals(self) -> None:
        """Handlers and interval timers in one batch, then the process's pending signals."""
        meta, inj = self.meta, self.inj
        batch = self.batch()
        for sig, action in meta["sigactions"].items():
            batch.add(NR["rt_sigaction"], int(sig), batch.put(struct.pack("4Q", *action)), 0, 8,
                      what=f"rt_sigaction({sig})")
        for which, (isec, iusec, vsec, vusec) in enumerate(meta["itimers"]):
            if not (vsec or vusec):  # expired, signal pending, not yet re-armed: next period
                vsec, vusec = isec, iusec
            if vsec or vusec:
                batch.add(NR["setitimer"], which, batch.put(struct.pack("4q", isec, iusec, vsec, vusec)), 0,
                          what="setitimer")
        batch.run()
        for info in meta["pending_shared"]:
            raw = bytes.fromhex(info)
            inj.check(NR["rt_sigqueueinfo"], meta["pid"], raw[0], inj.put(raw), what="queue a signal")

    def _create_threads(self) -> None:
        """Clone every other thread from the main one (set_tid), each stopped for its own state."""
        for thread in self.meta["threads"][1:]:
            host_tid = clone(self.inj, [thread["tid"]], THREAD_FLAGS, 0)
            inj = Injector(host_tid, self.inj.syscall_addr, self.inj.scratch, self.inj.scratch_size)
            self.threads.append((inj, thread))

    def _thread_state(self, inj: Injector, thread: dict) -> None:
        """Per-thread kernel state, set from inside the thread itself: one batch, then its
        pending signals (queued to itself, so allowed under any credentials)."""
        batch = self.batch(inj)
        head, length = thread["robust_list"]
        if head:
            batch.add(NR["set_robust_list"], head, length, what="set_robust_list")
        batch.add(NR["set_tid_address"], thread["tid_address"], what=None)
        rseq = thread["rseq"]
        if rseq["pointer"]:
            batch.add(NR["rseq"], rseq["pointer"], rseq["size"], 0, rseq["signature"], what="rseq")
        sp, flags, _, size = thread["sigaltstack"]
        if not flags & SS_DISABLE:
            batch.add(NR["sigaltstack"], batch.put(struct.pack("QiiQ", sp, flags & ~SS_ONSTACK, 0, size)), 0,
                      what="sigaltstack")
        self._credentials(batch)
        if thread.get("pdeath_signal"):       # version 4; after the credentials, whose change clears it
            batch.add(NR["prctl"], PR_SET_PDEATHSIG, thread["pdeath_signal"], 0, 0, 0, what="PR_SET_PDEATHSIG")
        batch.run()
        for info in thread["pending"]:
            raw = bytes.fromhex(info)
            inj.check(NR["rt_tgsigqueueinfo"], self.meta["pid"], thread["tid"], raw[0], inj.put(raw),
                      what="queue a signal")

    def _credentials(self, batch: CallBatch) -> None:
        """Groups, gids, uids (the file-system ones too) and, from version 4 images, the
        capability sets: the bounding set is cut while we may, KEEPCAPS keeps the permitted
        set across a change to a non-zero uid, capset then sets all three, and ambient
        capabilities are raised last (they need both permitted and inheritable)."""
        creds = self.meta["creds"]  # credentials are per thread in the kernel
        caps = creds.get("caps")
        groups = creds["groups"]
        batch.add(NR["setgroups"], len(groups), batch.put(struct.pack(f"{len(groups)}I", *groups)),
                  what="setgroups")
        if caps:
            for cap in range(_last_cap() + 1):
                if not caps["bounding"] >> cap & 1:
                    batch.add(NR["prctl"], PR_CAPBSET_DROP, cap, 0, 0, 0, what=f"PR_CAPBSET_DROP({cap})")
            batch.add(NR["prctl"], PR_SET_KEEPCAPS, 1, 0, 0, 0, what="PR_SET_KEEPCAPS")
        batch.add(NR["setresgid"], *creds["gid"][:3], what="setresgid")
        batch.add(NR["setfsgid"], creds["gid"][3], what=None)
        batch.add(NR["setresuid"], *creds["uid"][:3], what="setresuid")
        batch.add(NR["setfsuid"], creds["uid"][3], what=None)
        if caps:
            sets = [(caps[name] & 0xFFFFFFFF, caps[name] >> 32) for name in ("effective", "permitted", "inheritable")]
            data = struct.pack("6I", *(half for word in (0, 1) for half in (s[word] for s in sets)))
            batch.add(NR["capset"], batch.put(struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)), batch.put(data),
                      what="capset")
            for cap in range(64):
                if caps["ambient"] >> cap & 1:
                    batch.add(NR["prctl"], PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0,
                              what=f"PR_CAP_AMBIENT_RAISE({cap})")
            batch.add(NR["prctl"], PR_SET_KEEPCAPS, 0, 0, 0, 0, what="PR_SET_KEEPCAPS")

    def syscall_dispatch(self) -> None:
        """Each thread's syscall user dispatch (version 30), once nothing is injected into it
        any more: on, a selector saying BLOCK would send the injected calls to the program."""
        for inj, thread in self.threads:
            if "syscall_dispatch" in thread:
                kernel.set_syscall_dispatch(inj.tid, thread["syscall_dispatch"])

    def _dumpable(self) -> None:
        """The dumpable flag (version 25), once every thread has its credentials: the kernel
        resets it at each change of them, so a non-root process that had set it (nginx's
        workers, zdtm's tests) could no longer be read through /proc or ptraced by its owner,
        and a root one that had cleared it (ssh-agent) could dump its secrets in a core.
        prctl sets 0 or 1 only: 2 (suid_dumpable's "root only") is left as the kernel made
        it, with a warning when that differs."""
        wanted = self.meta.get("dumpable")
        if wanted is None:
            return
        if wanted in (0, 1):
            self.inj.check(NR["prctl"], PR_SET_DUMPABLE, wanted, 0, 0, 0, what="PR_SET_DUMPABLE")
        elif self.inj.call(NR["prctl"], PR_GET_DUMPABLE, 0, 0, 0, 0) != wanted:
            self.warnings.append(f"process {self.meta['pid']}: its dumpable flag {wanted} (fs.suid_dumpable) "
                                 f"cannot be set again by prctl")

    def _scheduling(self) -> None:
        """Policy, real-time priority and nice value (version 4 images), set from here for
        every thread (the kernel keeps them per thread; the image has the main thread's)."""
        sched = self.meta.get("sched")
        if sched is None:
            return
        policy, priority, nice = sched[:3]
        if len(sched) > 3:          # SCHED_DEADLINE: set by deadline_scheduling, once unpinned
            return
        try:
            for inj, _ in self.threads:
                os.sched_setscheduler(inj.tid, policy, os.sched_param(priority))
                os.setpriority(os.PRIO_PROCESS, inj.tid, nice)
        except PermissionError:
            self.warnings.append(f"process {self.meta['pid']}: its scheduling policy {policy}, priority {priority} "
                                 f"and nice value {nice} need privileges this restore does not have")

    def deadline_scheduling(self) -> None:
        """SCHED_DEADLINE and its parameters (version 16 images) for every thread, once the
        restore has given the threads their CPU affinity back: the kernel refuses the policy
        to a task pinned to fewer CPUs than its root domain has (and sched_setscheduler
        cannot set it at all)."""
        sched = self.meta.get("sched") or []
        if len(sched) <= 3:
            return
        try:
            for inj, _ in self.threads:
                kernel.set_sched_deadline(inj.tid, sched[0], sched[3:])
        except OSError as exc:        # no CAP_SYS_NICE, the kernel's admission control (EBUSY), ...
            self.warnings.append(f"process {self.meta['pid']}: its scheduling policy SCHED_DEADLINE (runtime, "
                                 f"deadline, period {sched[4:7]} ns) could not be set again ({exc.strerror}); it "
                                 "runs with the restorer's policy")

    def _sigtrap_action_back(self) -> None:
        """A batch's int3 forced a SIGTRAP through, which reset SIGTRAP's action to the
        default (callbatch.py): the process's own action goes back once no batch follows."""
        action = self.meta["sigactions"].get(str(signal.SIGTRAP))
        if action is not None:
            self.inj.check(NR["rt_sigaction"], signal.SIGTRAP, self.inj.put(struct.pack("4Q", *action)), 0, 8,
                           what="rt_sigaction(SIGTRAP)")

    def _room_for_fds(self) -> None:
        """Let the process hold its fds and the spare numbers above them that they pass
        through (from spare_base on), and one per memfd its mappings need (held until
        `_finish`: stress-ng --mlock has 10,000): it has our RLIMIT_NOFILE until _limits
        sets its own, and a program that raised its limit and used it (a server with
        thousands of connections started by a restorer with the usual soft limit of 1024)
        needs numbers past ours (EINVAL, EMFILE). Beyond our hard limit only with
        CAP_SYS_RESOURCE (an fd at the very top of a hard limit equal to ours cannot come
        back without it: stress-ng --sockpair)."""
        memfds = {vma["memfd"] for vma in self.meta["vmas"] if "memfd" in vma}
        need = self.spare_base + 4 * len(self.meta["fds"]) + len(memfds) + 64
        soft, hard = resource.prlimit(self.tid, resource.RLIMIT_NOFILE)
        if soft < need:
            try:
                resource.prlimit(self.tid, resource.RLIMIT_NOFILE, (need, max(need, hard)))
            except (PermissionError, ValueError):     # no CAP_SYS_RESOURCE: what we may
                resource.prlimit(self.tid, resource.RLIMIT_NOFILE, (hard, hard))

    def _limits(self) -> None:
        for name, (soft, hard) in self.meta["rlimits"].items():
            resource.prlimit(self.tid, getattr(resource, name), (soft, hard))

    def _registers(self) -> None:
        for inj, thread in self.threads:
            kernel.set_xstate(inj.tid, bytes.fromhex(thread["xstate"]))
            kernel.set_regs(inj.tid, restart_fixup(Regs.from_dict(thread["regs"]), same_task=False))
            kernel.set_sigmask(inj.tid, thread["sigmask"])
