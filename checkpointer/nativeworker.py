"""A thread of machine code that makes prepared system calls without Python's lock.

What: `submit(calls, cpus)` hands system calls ((nr, up to six integer arguments) each) to
one long-lived thread of this process that runs no Python (started on first use), moved to
`cpus` and run at the lowest real-time priority; it returns a `Batch` whose `results()`
makes the calls the thread has not begun yet itself (each call is claimed by one of the two
with an atomic compare-and-swap), waits for the others, and gives each call's raw result
(negative: -errno). None when it cannot be used: no other CPU, more than CAPACITY calls,
another thread's batch still out, no executable memory. The caller then does as before.
Why: the page copy of a stop runs on the other CPU while the tracer captures the rest
(snapshot.PageCopy). Done by a Python thread (copier.py), that thread needs Python's lock to
take its job and again after its process_vm_readv, and the tracer waits for the lock after
each of its own system calls: at 10 MiB (bench target) the fds were read in 0.36 ms with
that worker and 0.24 without it, the injected calls in 0.31 and 0.27, and submitting the
copy took 0.09 ms; the copy itself, 0.4 ms, is what the other CPU saves.

Simplifications: x86-64 only; the code is `_SOURCE` assembled (GNU as, Intel syntax; the
bytes were made with `as` and `objcopy -O binary -j .text`), position-independent. One
batch at a time in the process. The thread blocks every signal and lives as long as the
process (a forked child starts its own on first use; until then its batches run in the
caller alone, as they would if the thread never woke).
"""
from __future__ import annotations

import ctypes
import mmap
import os
import signal
import threading

from .pinning import raise_to_realtime

_SOURCE = """
# control: 0 generation (u32)  4 stop (u32)  8 done (u32)  12 count (u32)  16 entries (u64)  24 tid (u32)
# entry (72 bytes): 0 nr  8..48 six arguments  56 result  64 claim (u64)
run_entries:                     # run every entry not claimed yet, then return
    push rbx; push r12; push r13
    mov rbx, rdi
    mov r12, [rbx+16]
    mov r13d, [rbx+12]
1:  test r13, r13
    jz 3f
    xor eax, eax
    mov ecx, 1
    lock cmpxchg [r12+64], rcx
    jne 2f
    mov rax, [r12]; mov rdi, [r12+8]; mov rsi, [r12+16]; mov rdx, [r12+24]
    mov r10, [r12+32]; mov r8, [r12+40]; mov r9, [r12+48]
    syscall
    mov [r12+56], rax
    mov eax, 1
    lock xadd [rbx+8], eax
    inc eax
    cmp eax, [rbx+12]
    jne 2f
    lea rdi, [rbx+8]             # the last one done: futex(&done, FUTEX_WAKE_PRIVATE, INT_MAX)
    mov esi, 129
    mov edx, 0x7fffffff
    mov eax, 202
    syscall
2:  add r12, 72
    dec r13
    jmp 1b
3:  pop r13; pop r12; pop rbx
    ret
worker_main:                     # the thread: note its tid, then run each batch posted
    push rbx; push r12
    mov rbx, rdi
    mov eax, 186                 # gettid
    syscall
    mov [rbx+24], eax
    xor r12d, r12d               # the generation run last
4:  mov eax, [rbx+4]
    test eax, eax
    jnz 6f
    mov eax, [rbx]
    cmp eax, r12d
    jne 5f
    mov rdi, rbx                 # futex(&generation, FUTEX_WAIT_PRIVATE, r12d, NULL)
    mov esi, 128
    mov edx, r12d
    xor r10d, r10d
    mov eax, 202
    syscall
    jmp 4b
5:  mov r12d, eax
    mov rdi, rbx
    call run_entries
    jmp 4b
6:  pop r12; pop rbx
    xor eax, eax
    ret
"""
_CODE = bytes.fromhex(
    "53415441554889fb4c8b6310448b6b0c4d85ed746831c0b901000000f0490fb14c2440754f498b0424498b7c2408"
    "498b742410498b5424184d8b5424204d8b4424284d8b4c24300f054989442438b801000000f00fc14308ffc03b43"
    "0c7515488d7b08be81000000baffffff7fb8ca0000000f054983c44849ffcdeb93415d415c5bc35341544889fbb8"
    "ba0000000f058943184531e48b430485c0752b8b034439e075174889dfbe800000004489e24531d2b8ca0000000f"
    "05ebdb4189c44889dfe83affffffebce415c5b31c0c3")
_RUN_ENTRIES, _WORKER_MAIN = 0x00, 0x83
CAPACITY = 64                    # calls in one batch
NR_FUTEX, FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 202, 128, 129


class _Entry(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int64), ("args", ctypes.c_int64 * 6), ("result", ctypes.c_int64),
                ("claim", ctypes.c_uint64)]


class _Control(ctypes.Structure):
    _fields_ = [("generation", ctypes.c_uint32), ("stop", ctypes.c_uint32), ("done", ctypes.c_uint32),
                ("count", ctypes.c_uint32), ("entries", ctypes.c_void_p), ("tid", ctypes.c_int32),
                ("pad", ctypes.c_int32), ("table", _Entry * CAPACITY)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_start_lock = threading.Lock()
_busy = threading.Lock()        # held from submit() until that batch's results() have come back


class _Worker:
    """The thread and its memory: the code (executable) and the control block it reads."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.memory = mmap.mmap(-1, mmap.PAGESIZE + ctypes.sizeof(_Control), mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self.memory[:len(_CODE)] = _CODE
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))
        self.control = _Control.from_buffer(self.memory, mmap.PAGESIZE)
        self.control.entries = ctypes.addressof(self.control.table)
        self.run = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(base + _RUN_ENTRIES)   # lets go of Python's lock
        self.placed: set[int] = set()
        thread = ctypes.c_ulong()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())   # inherited: all blocked
        try:
            if _libc.pthread_create(ctypes.byref(thread), None, ctypes.c_void_p(base + _WORKER_MAIN),
                                    ctypes.c_void_p(ctypes.addressof(self.control))) != 0:
                raise OSError("pthread_create failed")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _libc.pthread_detach(thread)
        while self.control.tid == 0:            # its gettid, at once
            os.sched_yield()
        try:
            raise_to_realtime(self.control.tid)
        except OSError:
            pass

    def place(self, cpus: set[int]) -> None:
        if cpus != self.placed:
            try:
                os.sched_setaffinity(self.control.tid, cpus)
            except OSError:
                return
            self.placed = set(cpus)


_worker: _Worker | None = None


def start() -> _Worker | None:
    """The worker of this process, started if it was not (None if it cannot be made here).
    Called before a freeze (Incremental.precopy): its start waits for the new thread."""
    global _worker
    with _start_lock:
        if _worker is None or _worker.owner != os.getpid():
            try:
                _worker = _Worker()
            except (OSError, ValueError):
                return None
        return _worker


class Batch:
    """Calls handed to the worker; `results()` once (it lets the next batch in)."""

    def __init__(self, worker: _Worker, count: int, keep: object) -> None:
        self.worker, self.count = worker, count
        self.keep = keep        # what the calls' pointer arguments point into: alive until they are made
        self._results: list[int] | None = None

    def results(self) -> list[int]:
        """Each call's raw result (-errno on failure), in the order submitted."""
        if self._results is None:
            control = self.worker.control
            self.worker.run(ctypes.addressof(control))     # those the worker has not claimed, here
            address = ctypes.addressof(control) + _Control.done.offset
            while (done := control.done) != self.count:
                _libc.syscall(NR_FUTEX, ctypes.c_void_p(address), FUTEX_WAIT_PRIVATE, done, None)
            self._results = [control.table[i].result for i in range(self.count)]
            self.keep = None
            _busy.release()
        return self._results


def submit(calls: list[tuple[int, tuple[int, ...]]], cpus: set[int], keep: object = None) -> Batch | None:
    """Have the worker make `calls` on `cpus` (see the module docstring); `keep`: the
    memory their arguments point to, held until results() (the caller's too)."""
    if not cpus or not calls or len(calls) > CAPACITY or not _busy.acquire(blocking=False):
        return None
    worker = start()
    if worker is None:
        _busy.release()
        return None
    worker.place(cpus)
    control = worker.control
    control.done, control.count = 0, len(calls)
    for entry, (nr, args) in zip(control.table, calls):
        entry.nr = nr
        entry.args[:] = (*args, 0, 0, 0, 0, 0, 0)[:6]
        entry.claim = 0          # last: a worker still looping over an earlier batch may take it now
    control.generation += 1
    _libc.syscall(NR_FUTEX, ctypes.c_void_p(ctypes.addressof(control)), FUTEX_WAKE_PRIVATE, 1)
    return Batch(worker, len(calls), keep)
