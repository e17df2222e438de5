"""Thin ctypes bindings to the Linux/x86-64 calls the checkpointer needs.

What: ptrace requests, waitpid, raw syscalls, the register and signal structures,
and the constants, with errors turned into OSError. Why: the standard library has
no ptrace, and every layer above (freeze, capture, restore) speaks in these terms.

Simplifications: x86-64 only; all ptrace calls for a tracee must come from the one
thread that attached it (a kernel rule), callers are responsible for that.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import termios

# glibc by its soname: ctypes.util.find_library runs `/sbin/ldconfig -p` in a subprocess
# (3-5 ms, more under load) at every import, i.e. in each `sls` command and daemon start
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.syscall.restype = ctypes.c_long

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# ptrace requests
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F
PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG = 0x4210
PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG = 0x4211

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_EXITKILL = 0x100000
PTRACE_O_SUSPEND_SECCOMP = 0x200000
# Seccomp filters do not apply to a tracee seized with it: the calls we inject pass them
# (and restore can install them before the credentials that may forbid installing them).
# It takes CAP_SYS_ADMIN: a checkpoint or restore by another user goes without it.
SUSPEND_SECCOMP = PTRACE_O_SUSPEND_SECCOMP if os.geteuid() == 0 else 0

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_STOP = 128
PTRACE_PEEKSIGINFO_SHARED = 1

NT_X86_XSTATE = 0x202
XSTATE_BUFFER = 16384
SIGINFO_SIZE = 128
WALL = 0x40000000

# syscall numbers (x86-64)
NR = dict(
    write=1, close=3, lseek=8, mmap=9, mprotect=10, munmap=11, brk=12, rt_sigaction=13,
    mremap=25, getitimer=36, setitimer=38, wait4=61, fcntl=72, chdir=80, fchdir=81, umask=95, setpgid=109, setsid=112,
    setgroups=116, setresuid=117, setresgid=119, setfsuid=122, setfsgid=123, capset=126,
    rt_sigtimedwait=128, rt_sigqueueinfo=129, sigaltstack=131,
    personality=135, prctl=157, chroot=161, mount=165, set_tid_address=218, restart_syscall=219,
    exit_group=231, openat=257, unshare=272, set_robust_list=273, get_robust_list=274, dup3=292,
    rt_tgsigqueueinfo=297, rseq=334, seccomp=317, pidfd_open=434, clone3=435, close_range=436,
    pidfd_getfd=438, membarrier=324, madvise=28, mlock2=325, sched_setattr=314, sched_getattr=315,
)
# membarrier(2): the registrations a process made, as the REGISTER commands' bits (Linux 6.3)
MEMBARRIER_CMD_GET_REGISTRATIONS = 1 << 9
MEMBARRIER_REGISTER_COMMANDS = (1 << 2, 1 << 4, 1 << 6, 1 << 8)  # GLOBAL_/PRIVATE_EXPEDITED(_SYNC_CORE, _RSEQ)

# syscall restart codes seen in rax of a task stopped inside a syscall
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516

REG_NAMES = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
    "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
    "gs_base", "ds", "es", "fs", "gs",
)


class Regs(ctypes.Structure):
    """struct user_regs_struct (x86-64)."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in REG_NAMES]

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in REG_NAMES}

    @classmethod
    def from_dict(cls, values: dict[str, int]) -> "Regs":
        return cls(**{name: values[name] & 0xFFFFFFFFFFFFFFFF for name in REG_NAMES})

    def copy(self) -> "Regs":
        """An independent copy (of the structure's bytes: a copy by names took ~18 us in a
        stop, twice or more per stop)."""
        return Regs.from_buffer_copy(self)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        if err:
            raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def ptrace(request: int, tid: int, addr: int = 0, data: int | ctypes.c_void_p = 0) -> int:
    ctypes.set_errno(0)
    result = _libc.ptrace(request, tid, addr, data)
    if result == -1:    # (the message is made only then: ~20 requests a stop)
        return _check(result, f"ptrace({request:#x}, {tid})")
    return result


def syscall(number: int, *args: int) -> int:
    """A raw syscall made by this process; raises OSError on failure."""
    res = _libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return _check(res, f"syscall {number}")


def borrow_fd(pid: int, fd: int) -> int:
    """Our own dup of another process's fd (pidfd_getfd; close it when done)."""
    pidfd = syscall(NR["pidfd_open"], pid, 0)
    try:
        return syscall(NR["pidfd_getfd"], pidfd, fd, 0)
    finally:
        os.close(pidfd)


def bytes_waiting(fd: int) -> int:
    """Bytes a read of `fd` would find waiting (FIONREAD: a pipe's, a socket's, an inotify
    instance's queue)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def get_regs(tid: int) -> Regs:
    regs = Regs()
    ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
    return regs


def set_regs(tid: int, regs: Regs) -> None:
    ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))


def get_xstate(tid: int) -> bytes:
    buf = ctypes.create_string_buffer(XSTATE_BUFFER)
    iov = _IoVec(ctypes.addressof(buf), XSTATE_BUFFER)
    ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, ctypes.addressof(iov))
    return buf.raw[: iov.len]


def set_xstate(tid: int, data: bytes) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    iov = _IoVec(ctypes.addressof(buf), len(data))
    ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, ctypes.addressof(iov))


def get_sigmask(tid: int) -> int:
    mask = ctypes.c_uint64()
    ptrace(PTRACE_GETSIGMASK, tid, 8, ctypes.addressof(mask))
    return mask.value


def set_sigmask(tid: int, mask: int) -> None:
    value = ctypes.c_uint64(mask)
    ptrace(PTRACE_SETSIGMASK, tid, 8, ctypes.addressof(value))


def get_siginfo(tid: int) -> bytes:
    buf = ctypes.create_string_buffer(SIGINFO_SIZE)
    ptrace(PTRACE_GETSIGINFO, tid, 0, ctypes.addressof(buf))
    return buf.raw


def peek_siginfos(tid: int, shared: bool) -> list[bytes]:
    """Every queued siginfo of a thread's private queue, or of the process's shared one."""
    found: list[bytes] = []
    batch = 32
    buf = ctypes.create_string_buffer(SIGINFO_SIZE * batch)
    while True:
        args = struct.pack("QII", len(found), PTRACE_PEEKSIGINFO_SHARED if shared else 0, batch)
        arg_buf = ctypes.create_string_buffer(args, len(args))
        count = ptrace(PTRACE_PEEKSIGINFO, tid, ctypes.addressof(arg_buf), ctypes.addressof(buf))
        found += [buf.raw[i * SIGINFO_SIZE:(i + 1) * SIGINFO_SIZE] for i in range(count)]
        if count < batch:
            return found


def get_rseq(tid: int) -> dict[str, int]:
    buf = ctypes.create_string_buffer(24)
    ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, 24, ctypes.addressof(buf))
    pointer, size, signature, flags = struct.unpack_from("QIII", buf.raw)
    return {"pointer": pointer, "size": size, "signature": signature, "flags": flags}


_SUD_CONFIG = struct.Struct("4Q")   # struct ptrace_sud_config: mode, selector, offset, len
SYSCALL_DISPATCH_OFF = (0, 0, 0, 0)
_sud_request_known = [True]     # False once the kernel refused the request (before Linux 6.4)


def get_syscall_dispatch(tid: int) -> list[int]:
    """The syscall user dispatch of stopped thread `tid` (PR_SET_SYSCALL_USER_DISPATCH):
    [mode, selector address, offset, len]; mode 0: off (so on a kernel without the
    request, where the ptrace request is unknown: EIO)."""
    if not _sud_request_known[0]:
        return list(SYSCALL_DISPATCH_OFF)
    buf = ctypes.create_string_buffer(_SUD_CONFIG.size)
    try:
        ptrace(PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, tid, _SUD_CONFIG.size, ctypes.addressof(buf))
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        _sud_request_known[0] = False
        return list(SYSCALL_DISPATCH_OFF)
    return list(_SUD_CONFIG.unpack(buf.raw))


def set_syscall_dispatch(tid: int, config: list[int] | tuple[int, ...]) -> None:
    """Set it (`get_syscall_dispatch`'s list; SYSCALL_DISPATCH_OFF turns it off)."""
    buf = ctypes.create_string_buffer(_SUD_CONFIG.pack(*config), _SUD_CONFIG.size)
    ptrace(PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG, tid, _SUD_CONFIG.size, ctypes.addressof(buf))


def get_event_msg(tid: int) -> int:
    value = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, tid, 0, ctypes.addressof(value))
    return value.value


def get_robust_list(tid: int) -> tuple[int, int]:
    head, length = ctypes.c_void_p(), ctypes.c_size_t()
    syscall(NR["get_robust_list"], tid, ctypes.addressof(head), ctypes.addressof(length))
    return head.value or 0, length.value


def detach(tid: int) -> None:
    ptrace(PTRACE_DETACH, tid, 0, 0)


def waitpid(tid: int, flags: int = WALL) -> tuple[int, int]:
    """waitpid that retries on EINTR; returns (pid, raw status)."""
    while True:
        try:
            return os.waitpid(tid, flags)
        except InterruptedError:
            continue


SCHED_DEADLINE = 6
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")    # struct sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes)


def sched_deadline(tid: int) -> list[int]:
    """A SCHED_DEADLINE task's [flags, runtime, deadline, period] (ns), from sched_getattr."""
    buf = ctypes.create_string_buffer(_SCHED_ATTR.size)
    syscall(NR["sched_getattr"], tid, ctypes.addressof(buf), _SCHED_ATTR.size, 0)
    _, _, flags, _, _, runtime, deadline, period = _SCHED_ATTR.unpack(buf.raw)
    return [flags, runtime, deadline, period]


def set_sched_deadline(tid: int, policy: int, parameters: list[int]) -> None:
    """sched_setattr of SCHED_DEADLINE (`policy` may carry SCHED_RESET_ON_FORK) with the
    [flags, runtime, deadline, period] sched_deadline read."""
    flags, runtime, deadline, period = parameters
    if policy & os.SCHED_RESET_ON_FORK:
        flags |= 1                              # SCHED_FLAG_RESET_ON_FORK
    buf = ctypes.create_string_buffer(_SCHED_ATTR.pack(_SCHED_ATTR.size, SCHED_DEADLINE, flags, 0, 0,
                                                       runtime, deadline, period), _SCHED_ATTR.size)
    syscall(NR["sched_setattr"], tid, ctypes.addressof(buf), 0)


def file_system_magic(path: str) -> int:
    """statfs(2)'s f_type of the file system holding `path` (e.g. a /proc/PID/fd/N link:
    the file system of that open file, mounted anywhere or nowhere)."""
    buf = ctypes.create_string_buffer(128)          # struct statfs: f_type (long) first
    _check(_libc.statfs(os.fsencode(path), buf), f"statfs {path}")
    return ctypes.c_long.from_buffer(buf).value


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))
