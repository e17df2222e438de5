"""Readers for the /proc files that describe a process.

What: parsed views of /proc/PID/{maps,smaps,status,stat,auxv,fd,fdinfo,pagemap}. Why:
the capture reads most of a process's state from here, without touching the process.
Everything returned is plain data (ints, strings, dataclasses), ready for an image.

While a freeze window is open in this thread (`window()`, entered by freeze.freeze),
what a frozen process cannot change is read once: its memory map (`maps`), its status
(`frozen_status`), its auxiliary vector (`auxv`), an open /proc/PID/pagemap (`pagemap`)
and whatever else callers keep by `once_per_window` (the vdso's syscall address). Our own
injections may map and unmap memory inside the window, but give it back before anyone
reads the map again; the mapping the checkpointer keeps in
a tracked process (injection_page.py) is left out by `maps`. The lines of the maps file
are parsed once (a cache by their text).

Simplifications: x86-64 and 4 KiB pages; PIDs of the process's own namespace are
taken from the last field of the NS* lines of /proc/PID/status.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import resource
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

from .errors import ProcessGone, Unsupported
from .kernel import PAGE_SIZE

T = TypeVar("T")
SPECIAL_MAPPINGS = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]")


@dataclass
class Vma:
    start: int
    end: int
    perms: str  # "rwxp" / "r--s" as in /proc/PID/maps
    offset: int
    inode: int
    path: str  # "" for anonymous; "[heap]", "[stack]", "[vdso]", ... for special ones
    flags: list[str] = field(default_factory=list)  # VmFlags as in smaps; only "gd" ([stack]) is set

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def special(self) -> bool:
        return self.path in SPECIAL_MAPPINGS

    @property
    def file_backed(self) -> bool:
        return self.inode != 0 and not self.path.startswith("[")

    @property
    def pages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE

    @functools.cached_property
    def signature(self) -> tuple:
        """(start, end, perms, offset, path): the mapping as the write tracking knows it
        (incremental.py: a mapping with another signature is new, stored whole). Kept on
        the object: a Vma is never changed once made, and the one made for a line of the
        maps file is used again for that line (`_PARSED_LINES`), so a stop asks for the
        signatures of mappings it already knows (~190 times a stop at 10 MiB)."""
        return (self.start, self.end, self.perms, self.offset, self.path)


def read_file(path: str, dir_fd: int | None = None) -> bytes:
    """The whole of a (/proc) file, read with os.open/os.read: open().read() costs six more
    system calls (two fstats, an isatty ioctl, two lseeks) and its buffered text layer,
    15-30 us where this takes ~3-5; a stop reads tens of them (Redis, 5 threads: 19)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_memory(pid: int, address: int, size: int) -> bytes:
    """Up to `size` bytes of a process's memory at `address` (/proc/PID/mem: a pread, with
    an open and a close outside a freeze window; a buffered open() adds an fstat and a
    seek to those)."""
    fd, ours = open_memory(pid)
    try:
        return os.pread(fd, size, address)
    finally:
        if ours:
            os.close(fd)


def open_memory(pid: int, write: bool = False) -> tuple[int, bool]:
    """An fd of /proc/PID/mem (of task `pid`) and whether the caller is to close it. Inside
    a freeze window, one read-write fd per task, kept until the window ends: a stop reads
    and writes a process's memory three times or more (the vdso's syscall check, the
    injection page's cookie, each injector), and each open and close costs more than the
    pread itself. A frozen task cannot exec, so the fd stays that of its memory. Outside
    one, a new fd (`write`: read-write). OSError as os.open raises it."""
    cache = window_cache()
    if cache is None:
        return os.open(f"/proc/{pid}/mem", (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC), True
    if ("mem", pid) not in cache:
        cache[("mem", pid)] = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
    return cache[("mem", pid)], False


def _read(pid: int, name: str, mode: str = "r") -> str | bytes:
    try:
        data = read_file(f"/proc/{pid}/{name}")
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc
    return data if "b" in mode else data.decode()


_local = threading.local()


@contextmanager
def window() -> Iterator[None]:
    """Read what frozen processes cannot change once, until the block ends (this thread);
    the fds kept meanwhile (`pagemap`, `open_memory`) are closed then."""
    outer = getattr(_local, "cache", None)
    _local.cache = {}
    try:
        yield
    finally:
        for key, value in _local.cache.items():
            if key[0] in ("pagemap", "mem"):
                os.close(value)
        _local.cache = outer


def window_cache() -> dict | None:
    """The open freeze window's cache (keys: (kind, pid)), or None outside one."""
    return getattr(_local, "cache", None)


def once_per_window(kind: str, pid: int, read: Callable[[int], T]) -> T:
    """`read(pid)`, kept as `kind` of `pid` for the rest of an open freeze window (for
    what a frozen process cannot change); read at every call outside one."""
    cache = window_cache()
    if cache is None:
        return read(pid)
    if (kind, pid) not in cache:
        cache[(kind, pid)] = read(pid)
    return cache[(kind, pid)]


@contextmanager
def pagemap(pid: int) -> Iterator[int]:
    """An fd of /proc/PID/pagemap (kept open for the rest of a freeze window)."""
    cache = window_cache()
    if cache is not None and ("pagemap", pid) in cache:
        yield cache[("pagemap", pid)]
        return
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc
    if cache is not None:
        cache[("pagemap", pid)] = fd
        yield fd
        return
    try:
        yield fd
    finally:
        os.close(fd)


def maps(pid: int) -> list[Vma]:
    """The VMAs of a process (from /proc/PID/maps: smaps would walk every page table)."""
    return list(once_per_window("maps", pid, _read_maps))


# Parsed lines of /proc/PID/maps, by their text (which says all a Vma holds): a process
# keeps most of its mappings from one checkpoint to the next, and parsing hundreds of lines
# cost more than reading them. Vma objects are never changed once made.
_PARSED_LINES: dict[str, Vma] = {}
PARSED_LINES_REMEMBERED = 1 << 17


def _read_maps(pid: int) -> list[Vma]:
    lines = _read(pid, "maps").splitlines()
    if len(_PARSED_LINES) + len(lines) > PARSED_LINES_REMEMBERED:
        _PARSED_LINES.clear()
    vmas = [_PARSED_LINES.get(line) or _parse_line(line) for line in lines]
    if pid in _OWN:
        _leave_out_own(pid, vmas)
    return vmas


def _parse_line(line: str) -> Vma:
    head = line.split(None, 5)
    start, end = (int(x, 16) for x in head[0].split("-"))
    path = head[5] if len(head) > 5 else ""
    vma = _PARSED_LINES[line] = Vma(start, end, head[1], int(head[2], 16), int(head[4]), path,
                                    ["gd"] if path == "[stack]" else [])
    return vma


# Mappings the checkpointer keeps in a process for itself (injection_page.py), by pid:
# (start, end, cookie). maps() leaves such a mapping out while it is still the one that was
# made: the same extent, private RWX, anonymous, the cookie in its last bytes. Once it is
# not (the process unmapped it or mapped over it, exec()ed, or its pid is another process's
# now) it is forgotten.
_OWN: dict[int, tuple[int, int, bytes]] = {}


def own_mapping(pid: int, start: int, end: int, cookie: bytes) -> None:
    """Mark [start, end) of `pid` as the checkpointer's (its last bytes hold `cookie`)."""
    _OWN[pid] = (start, end, cookie)


def disown(pid: int) -> None:
    _OWN.pop(pid, None)


def owned(pid: int) -> tuple[int, int] | None:
    """(start, end) of the checkpointer's own mapping in `pid`, as last checked by maps()."""
    own = _OWN.get(pid)
    return None if own is None else own[:2]


def _leave_out_own(pid: int, vmas: list[Vma]) -> None:
    start, end, cookie = _OWN[pid]
    for i, vma in enumerate(vmas):
        if vma.start == start and vma.end == end and vma.perms == "rwxp" and not vma.inode and not vma.path:
            try:
                ours = read_memory(pid, end - len(cookie), len(cookie)) == cookie
            except OSError:
                ours = False
            if ours:
                del vmas[i]
                return
            break
    del _OWN[pid]


_VM_FLAGS: dict[int, dict[tuple[int, int, int, int], frozenset[str]]] = {}  # pid -> (start, end, inode, offset)
_SHAPES: dict[int, tuple[bytes, bytes]] = {}   # pid -> its _shape when its mappings were last found all noted
VM_FLAGS_REMEMBERED = 4096   # processes


def vm_flags(pid: int, vma: Vma) -> frozenset[str]:
    """The VmFlags of a mapping as /proc/PID/smaps shows them ("mw", "wf", "dc", "dp", "gd",
    ...): what maps does not say. smaps walks every page table of the process (~1 ms per 100
    MiB resident, inside the stop), so one read notes the flags of all its mappings, and
    smaps is read again only for a mapping not noted: made, or changed in extent, file or
    offset, since (a Redis under load: 4-9% of its checkpoints at 10 Hz). Not seen: a flag
    madvise gives to a whole mapping already noted, or a mapping unmapped and made again
    with the same extent."""
    key = (vma.start, vma.end, vma.inode, vma.offset)
    known = _VM_FLAGS.get(pid)
    if known is None or key not in known:
        if len(_VM_FLAGS) >= VM_FLAGS_REMEMBERED:
            _VM_FLAGS.clear()
            _SHAPES.clear()
        known = _VM_FLAGS[pid] = _read_vm_flags(pid)   # as they are now: nothing stale kept
        known.setdefault(key, frozenset())               # (not in smaps: read once only)
    return known[key]


def note_new_vm_flags(pid: int) -> bool:
    """Before a freeze, the process running: read smaps now if a mapping of `pid` has
    VmFlags not noted (made or changed since the last read), so that the stop does not
    (Redis under redis-benchmark: 1 stop in 10 read smaps, 1.7 ms of a 6-7 ms stop at load
    10); True if it was read. A mapping made between this and the freeze is still read
    in the stop. Known flags are taken as they were when read, as vm_flags takes them.
    The maps are looked at only when the process's shape (`_shape`: its size and data in
    /proc/PID/statm) moved since they were last found all noted: reading the maps cost
    ~0.3 ms of the daemon's CPU at every checkpoint of an idle Redis (119 mappings), the
    statm ~10 us. A mapping that changes without moving either (split by an madvise or an
    mprotect that keeps it writable, or unmapped as another of its size is made) is read
    in the stop, as one made after this call is: the image's flags never depend on this
    call, only where smaps is read. Redis under redis-benchmark at 10 Hz: every one of the
    6 intervals in 100 that made mappings moved its shape."""
    shape = _shape(pid)
    known = _VM_FLAGS.get(pid)
    if known is not None and _SHAPES.get(pid) == shape:
        return False
    if known is not None and all((v.start, v.end, v.inode, v.offset) in known for v in maps(pid)):
        _SHAPES[pid] = shape
        return False
    note_vm_flags(pid)
    _SHAPES[pid] = shape
    return True


def _shape(pid: int) -> tuple[bytes, bytes]:
    """(size, data) of /proc/PID/statm: what a mapping made, removed or resized, or made
    read-only, moves."""
    fields = _read(pid, "statm", "rb").split()
    return fields[0], fields[5]


def note_vm_flags(pid: int) -> None:
    """Read the VmFlags of every mapping of `pid` now, while it runs (before the freeze of a
    large process's first capture: the stop then reads smaps only for mappings made or
    changed since)."""
    try:
        _VM_FLAGS[pid] = _read_vm_flags(pid)
    except ProcessGone:
        pass


def _read_vm_flags(pid: int) -> dict[tuple[int, int, int, int], frozenset[str]]:
    flags, current = {}, None
    for line in _read(pid, "smaps").splitlines():
        if line.startswith("VmFlags:"):
            if current is not None:
                flags[current] = frozenset(line.split()[1:])
            current = None
        elif (head := line.split(None, 5)) and "-" in head[0] and len(head) >= 5:
            start, end = (int(x, 16) for x in head[0].split("-"))
            current = (start, end, int(head[4]), int(head[2], 16))
    return flags


def number(pid: int, name: str, base: int = 10) -> int:
    """The number in /proc/PID/NAME (personality, oom_score_adj, loginuid): read with
    os.open/read, ~3 us, where open().read() takes 15-30 us (every process, every stop)."""
    fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(os.read(fd, 64), base)
    finally:
        os.close(fd)


def loginuid(pid: int) -> int | None:
    """The audit login uid of the process (4294967295: none set), or None on a kernel
    without audit (no /proc/PID/loginuid)."""
    try:
        return number(pid, "loginuid")
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            raise
        return None


def status(pid: int) -> dict[str, str]:
    result = {}
    for line in _read(pid, "status").splitlines():
        key, _, value = line.partition(":")
        result[key] = value.strip()
    return result


def frozen_status(pid: int) -> dict[str, str]:
    """`status(pid)` read once per freeze window: for what a frozen task cannot change
    (ids, credentials, signal dispositions; not its state or pending signals)."""
    return once_per_window("status", pid, status)


def ns_tid(pid: int, tid: int) -> int:
    """Thread `tid` of process `pid` as the process's own PID namespace numbers it: the
    tid itself when the process is in the reader's namespace (one NSpid entry)."""
    if len(frozen_status(pid)["NSpid"].split()) == 1:
        return tid
    return ns_id(frozen_status(tid)["NSpid"])


def ns_id(value: str) -> int:
    """The last (innermost namespace) number of an NSpid/NSpgid/NSsid line."""
    return int(value.split()[-1])


def memory_available() -> int:
    """Bytes of memory available for new allocations without swapping (/proc/meminfo)."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:"))


def resident_pages(pid: int) -> int:
    """Pages of the process resident in memory (/proc/PID/statm)."""
    return int(_read(pid, "statm").split()[1])


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat split into fields; index 0 is field 1 (pid), comm is collapsed."""
    raw = _read(pid, "stat")
    head, _, tail = raw.rpartition(")")
    pid_part, _, comm = head.partition(" (")
    return [pid_part, comm] + tail.split()


def mm_layout(pid: int, fields: list[str] | None = None) -> dict[str, int]:
    """The mm fields PR_SET_MM_MAP takes, from /proc/PID/stat (brk filled in later);
    `fields`: that file's stat_fields, if the caller has read them already."""
    f = fields or stat_fields(pid)
    pick = lambda n: int(f[n - 1])  # noqa: E731  (1-based field numbers as in proc(5))
    return {
        "start_code": pick(26), "end_code": pick(27), "start_stack": pick(28),
        "start_data": pick(45), "end_data": pick(46), "start_brk": pick(47),
        "arg_start": pick(48), "arg_end": pick(49), "env_start": pick(50), "env_end": pick(51),
    }


def auxv(pid: int) -> bytes:
    """The process's auxiliary vector, up to its AT_NULL; read once per freeze window (only
    an exec changes it, which a frozen process cannot do): the capture records it and the
    injection finds the vdso by it."""
    return once_per_window("auxv", pid, _auxv)


def _auxv(pid: int) -> bytes:
    data = _read(pid, "auxv", "rb")
    # trim to the AT_NULL terminator
    for i in range(0, len(data), 16):
        if struct.unpack_from("Q", data, i)[0] == 0:
            return data[: i + 16]
    return data


def tids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc


def thread_count(pid: int) -> int:
    """How many threads the process has now, from one stat of /proc/PID/task (its link
    count is two plus the kernel's count of the threads): five system calls fewer than a
    listing, which a freeze makes only when this count differs from the threads it holds."""
    try:
        return os.stat(f"/proc/{pid}/task").st_nlink - 2
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc


def children(pid: int, threads: Iterable[int] | None = None) -> list[int]:
    """Direct children (in the reader's namespace) of every thread of a process; `threads`:
    its threads, when the caller knows them all (frozen: it cannot make new ones), so that
    its task directory is not listed."""
    found: list[int] = []
    for tid in tids(pid) if threads is None else threads:
        try:
            text = _read(pid, f"task/{tid}/children")
        except ProcessGone:
            continue
        found += [int(c) for c in text.split()]
    return sorted(set(found))


def with_descendants(pids: Iterable[int]) -> list[int]:
    """`pids` and every process descended from them now, zombies too (those gone meanwhile
    left out)."""
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        try:
            todo += children(pid)
        except ProcessGone:
            continue
        found.append(pid)
    return found


@dataclass
class FdInfo:
    fd: int
    target: str  # readlink of /proc/PID/fd/N
    flags: int
    pos: int
    extra: dict[str, str]
    raw: str  # the whole fdinfo text (epoll lists one "tfd:" line per watched fd)


def fds(pid: int, known: Callable[[int, str], FdInfo | None] | None = None) -> list[FdInfo]:
    """Every fd of a process with its fdinfo (through descriptors of its fd and fdinfo
    directories: one path walk in all, not three per fd). `known(fd, target)` may return
    an FdInfo read earlier, which is then used instead of reading the fdinfo again. The fd
    directory is listed by its path: a listing through a descriptor dups it, checks and
    rewinds it (eight system calls where a path takes five, every process, every stop)."""
    try:
        numbers = sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
        fd_dir = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        info_dir = os.open(f"/proc/{pid}/fdinfo", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc
    try:
        result = []
        for fd in numbers:
            try:
                target = os.readlink(str(fd), dir_fd=fd_dir)
                if known is not None and (earlier := known(fd, target)) is not None:
                    result.append(earlier)
                    continue
                raw = _read_at(info_dir, str(fd))
            except FileNotFoundError:
                continue  # closed meanwhile (cannot happen while frozen, but harmless)
            except ProcessLookupError as exc:
                raise ProcessGone(pid) from exc
            result.append(_fd_info(fd, target, raw))
        return result
    finally:
        os.close(fd_dir)
        os.close(info_dir)


def own_fd(fd: int) -> FdInfo:
    """The FdInfo of one of our own fds (a file in flight that a peek gave us)."""
    with open(f"/proc/self/fdinfo/{fd}") as fdinfo:
        return _fd_info(fd, os.readlink(f"/proc/self/fd/{fd}"), fdinfo.read())


def _fd_info(fd: int, target: str, raw: str) -> FdInfo:
    info: dict[str, str] = {}
    for line in raw.splitlines():
        key, _, value = line.partition(":")
        info[key] = value.strip()
    return FdInfo(fd, target, int(info.pop("flags"), 8), int(info.pop("pos")), info, raw)


def _read_at(dir_fd: int, name: str) -> str:
    return read_file(name, dir_fd).decode()


DELETED = " (deleted)"          # what /proc appends to the path of an unlinked file
PM_PRESENT = 1 << 63
PM_SWAPPED = 1 << 62


# Pages as sorted, disjoint, page-aligned address ranges [(start, end)]: what PAGEMAP_SCAN
# reports, and what a copy reads (one iovec per run). A list of every page's address cost a
# full checkpoint of 2 GiB ~15 ms to build inside its stop, and more to pass on.
PageRanges = list[tuple[int, int]]


def range_pages(ranges: PageRanges) -> int:
    """The number of pages in `ranges`."""
    return sum(end - start for start, end in ranges) // PAGE_SIZE


def dirty_ranges(pid: int, vma: Vma) -> PageRanges:
    """The pages of a VMA whose contents are not in their backing file: present and not
    a clean file page, or swapped (PAGEMAP_SCAN: a full checkpoint of 2 GiB read 524,288
    pagemap entries in Python, ~190 ms of its stop)."""
    with pagemap(pid) as fd:
        if not (vma.file_backed or vma.special):   # anonymous memory: no file pages to leave out
            ranges = page_ranges(fd, vma.start, vma.end, PAGE_IS_PRESENT)
        else:     # present and not a file page: FILE inverted, then required
            ranges = page_ranges(fd, vma.start, vma.end, PAGE_IS_PRESENT | PAGE_IS_FILE, inverted=PAGE_IS_FILE)
        ranges += page_ranges(fd, vma.start, vma.end, PAGE_IS_SWAPPED, report=PAGE_IS_GUARD)   # guard markers look swapped
    if any(categories & PAGE_IS_GUARD for _, _, categories in ranges):
        raise refuse_guard_pages(pid, min(start for start, _, categories in ranges if categories & PAGE_IS_GUARD))
    return sorted((start, end) for start, end, _ in ranges)


def check_no_guard_pages(pid: int, vma: Vma) -> None:
    """Refuse guard pages in a mapping whose contents are read elsewhere (shared memory:
    from its object; guard markers live in the process's own page tables)."""
    check_no_guard_pages_in(pid, vma.start, vma.end)


def check_no_guard_pages_in(pid: int, start: int, end: int) -> None:
    """Refuse guard pages in [start, end) of a process's memory."""
    with pagemap(pid) as fd:
        guarded = page_ranges(fd, start, end, PAGE_IS_GUARD)
    if guarded:
        raise refuse_guard_pages(pid, guarded[0][0])


def refuse_guard_pages(pid: int, address: int) -> Unsupported:
    """The error for guard pages (madvise MADV_GUARD_INSTALL, Linux 6.13): an image would
    bring them back as ordinary memory, the guard gone."""
    return Unsupported(f"process {pid} has guard pages (madvise MADV_GUARD_INSTALL) at {address:#x}: slsfs "
                       "cannot checkpoint them yet (restored, they would be ordinary memory, the guard gone)")


PAGEMAP_SCAN = 0xC0606610               # _IOWR('f', 16, struct pm_scan_arg) (96 bytes)
PAGE_IS_WPALLOWED = 1 << 0   # of a whole mapping: registered for write-protect tracking (WP_ASYNC)
PAGE_IS_WRITTEN, PAGE_IS_FILE, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_GUARD = 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 8
RANGES_PER_SCAN = 512


def scan_buffer() -> ctypes.Array:
    """An output buffer for `page_ranges` (RANGES_PER_SCAN ranges), to reuse: one per thread."""
    return (ctypes.c_uint64 * (3 * RANGES_PER_SCAN))()


def page_ranges(pagemap_fd: int, start: int, end: int, mask: int, *, inverted: int = 0, report: int = 0,
                flags: int = 0, regions: ctypes.Array | None = None) -> list[tuple[int, int, int]]:
    """[(start, end, categories)] of the pages in [start, end) whose categories, `inverted`
    ones flipped, all have the bits of `mask` (PAGEMAP_SCAN, Linux 6.7, with its `flags`:
    write-protecting what it reports, say); the categories given are those of `mask` and
    `report`. `regions`: a buffer of 3 * RANGES_PER_SCAN u64 to reuse. OSError on failure."""
    regions = regions if regions is not None else scan_buffer()
    found: list[tuple[int, int, int]] = []
    while start < end:
        arg = scan_arg(start, end, mask, inverted=inverted, report=report, flags=flags, regions=regions)
        found += scan_found(regions, fcntl.ioctl(pagemap_fd, PAGEMAP_SCAN, arg))
        start = arg[SCAN_WALK_END]
    return found


SCAN_WALK_END = 4       # the u64 of struct pm_scan_arg where the kernel says where its walk ended


def scan_arg(start: int, end: int, mask: int, *, inverted: int = 0, report: int = 0, flags: int = 0,
             regions: ctypes.Array) -> ctypes.Array:
    """PAGEMAP_SCAN's struct pm_scan_arg (see page_ranges) for [start, end), its output
    into `regions` (scan_buffer); the kernel sets [SCAN_WALK_END] to where it stopped
    (`end`, or short of it when `regions` filled up)."""
    return (ctypes.c_uint64 * 12)(96, flags, start, end, 0, ctypes.addressof(regions), RANGES_PER_SCAN, 0,
                                  inverted, mask, 0, mask | report)


def scan_found(regions: ctypes.Array, count: int) -> list[tuple[int, int, int]]:
    """The `count` (start, end, categories) a PAGEMAP_SCAN wrote into `regions`."""
    flat = regions[:3 * count]          # (no Python step per range: hundreds in a Redis stop)
    return list(zip(flat[0::3], flat[1::3], flat[2::3]))


# Parsed /proc/PID/limits, by its text: processes keep their limits, and the parsing cost
# a stop more than the read (a few distinct texts per machine: a few hundred are kept).
_PARSED_LIMITS: dict[str, dict[int, tuple[int, int]]] = {}
PARSED_LIMITS_REMEMBERED = 256


def rlimits(pid: int) -> dict[int, tuple[int, int]]:
    """(soft, hard) of each resource limit, by RLIMIT_ number, from /proc/PID/limits (the
    kernel lists them in that order); not to be changed (shared by processes with the same
    limits). Unlike prlimit(2), reading them needs no CAP_SYS_RESOURCE when the process
    belongs to another user."""
    text = _read(pid, "limits")
    if (known := _PARSED_LIMITS.get(text)) is not None:
        return known
    limits = {}
    for number, line in enumerate(text.splitlines()[1:]):
        soft, hard = line[26:47].strip(), line[47:68].strip()
        limits[number] = tuple(resource.RLIM_INFINITY if v == "unlimited" else int(v) for v in (soft, hard))
    if len(_PARSED_LIMITS) >= PARSED_LIMITS_REMEMBERED:
        _PARSED_LIMITS.clear()
    _PARSED_LIMITS[text] = limits
    return limits
