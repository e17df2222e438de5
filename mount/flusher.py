"""The syncfs helper process: brings the kernel's writeback cache into the daemon.

With the writeback cache on, the daemon must syncfs(2) its own mount before periodic
checkpoints. Why a process and not a thread of the daemon: syncfs waits for write-back
requests that only the daemon answers. If the daemon is SIGKILLed meanwhile, a thread
of it asleep in syncfs sleeps uninterruptibly, so the daemon never finishes exiting, its
/dev/fuse descriptor is never closed, the kernel never ends the connection, and the
syncfs never returns: a dead daemon that holds the store's lock and the mount forever
(seen in 1 of 7 SIGKILLs under a small-write load). This helper is a separate,
exec'd process (it does not inherit /dev/fuse, which is close-on-exec): the daemon can
always die, the kernel then ends the connection, and the helper's syncfs returns.

Protocol (version PROTOCOL, docs/FORMAT.md), over the helper's stdin/stdout: the helper
first writes the line "slsfs-flusher 1"; then the daemon writes one byte per request;
the helper opens the mount's root, syncfs()es it, closes it and answers one line: "0" or
the errno of the failure. It opens the root through a private clone of the mount
(open_tree(2) OPEN_TREE_CLONE: another mount of the same superblock, attached nowhere):
umount(2) refuses a mount that an open file refers to (EBUSY), and a plain `sls mount` is
flushed every FLUSH_EVERY_S while a file was open for writing, so a umount(8) landing
in the helper's open-syncfs-close failed (seen once at load 7-8); it does not count the
clone's, and the superblock then lives until the helper closes it, a moment later, when
the kernel ends the daemon's session as after any umount. Where cloning a mount is not
allowed (no CAP_SYS_ADMIN) the mount point itself is opened. It exits at the end of its
input. A daemon that holds its mount's root open for its whole life anyway (a group
daemon) hands that descriptor to the helper (`--fd N`), which then syncfs()es it
without the open and close: those were an OPENDIR
and a RELEASEDIR request to the daemon inside every group checkpoint's stop (the
RELEASEDIR, sent by the kernel after close() returns, also kept the drain after the
syncfs waiting for it), where the syncfs of a mount with nothing dirty takes microseconds.

The daemon reads the answers in its trio thread (`Flusher`), which keeps answering the
write-back requests the syncfs waits for: a group daemon's stop seals the file system
there too (slsfs.group_checkpoint.Seal). A request may be written from another thread
(`Flusher.request`: the group stop's tracer, at the freeze, so that the syncfs runs on
another CPU while the processes are captured); requests are numbered in the order they
are written and the helper answers them in that order, so each requester takes the
answer to its own request, never one to a syncfs that began before it asked.
"""
from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Iterator

TYPE_CHECKING = False             # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    import ctypes

# trio, subprocess and threading are imported by the daemon's side only (Flusher's
# methods), ctypes by the helper's (this file run as a script): a command's check for
# files open in a mount (is_helper_of) needs none of them (trio cost each ~150 ms of CPU,
# subprocess and ctypes ~7 ms: `sls restore` after `sls mount`).

PROTOCOL = 1
BANNER = b"slsfs-flusher %d\n" % PROTOCOL


def serve(mountpoint: str, held_fd: int | None = None, device: str | None = None) -> None:
    """The helper's loop (run as `python flusher.py MOUNTPOINT [--fd N | --device MAJ:MIN]`):
    syncfs the mount through `held_fd` (a descriptor of it inherited from the daemon) if
    given, else through a descriptor opened and closed for each request: of the mount at
    `mountpoint` or, once that is gone, of another mount of file system `device` (a second
    mount the user kept: mount --bind, `sls mount` of a live store)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    out = sys.stdout.buffer
    try:
        out.write(BANNER)
        out.flush()
        while sys.stdin.buffer.read(1):
            try:
                fd = held_fd if held_fd is not None else _open_mounted_root(libc, mountpoint, device)
            except OSError as exc:
                err = exc.errno
            else:               # (not mounted anywhere any more: the unmount flushed it)
                err = 0 if fd is None or libc.syncfs(fd) == 0 else ctypes.get_errno()
                if fd not in (held_fd, None):
                    os.close(fd)
            out.write(b"%d\n" % err)
            out.flush()
    except BrokenPipeError:     # the daemon died (SIGKILL): nobody is left to answer
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # (no flush error at exit)


SYS_OPEN_TREE = 428          # (the same number on every architecture)
OPEN_TREE_CLONE = 1
AT_FDCWD = -100


def _open_mounted_root(libc: ctypes.CDLL, mountpoint: str, device: str | None) -> int | None:
    """A descriptor of the root of file system `device` (any if None) through its mount at
    `mountpoint`, else through another of its mounts in mountinfo; None if it has none.
    Not the path alone: once the user has unmounted it there (keeping a second mount), the
    directory under it is another file system, whose syncfs would leave ours unflushed.
    Raises the error of the last mount that failed to open."""
    failure = None
    for path in _mount_points(mountpoint, device):
        try:
            fd = _open_root(libc, path)
        except OSError as exc:
            failure = exc
            continue
        if device is None or _device_of(fd) == device:
            return fd
        os.close(fd)
    if failure is not None:
        raise failure
    return None


def _mount_points(mountpoint: str, device: str | None) -> Iterator[bytes]:
    """`mountpoint`, then (read only if asked for) the mount points of file system `device`
    ("major:minor") in this mount namespace."""
    yield os.fsencode(mountpoint)
    if device is not None:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
        for fields in map(bytes.split, lines):
            if fields[2] == device.encode():
                yield re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])


def _device_of(fd: int) -> str:
    st_dev = os.fstat(fd).st_dev
    return f"{os.major(st_dev)}:{os.minor(st_dev)}"


def _open_root(libc: ctypes.CDLL, mountpoint: bytes) -> int:
    """A descriptor of the root of the mount at `mountpoint`, opened through a private clone
    of that mount (see the module docstring: a umount is not refused while it is open), or
    through the mount point where the clone is not allowed."""
    import ctypes
    tree = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, mountpoint, OPEN_TREE_CLONE | os.O_CLOEXEC)
    if tree < 0:
        err = ctypes.get_errno()
        if err not in (errno.EPERM, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
        return os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=tree)   # (syncfs refuses the O_PATH tree)
    finally:
        os.close(tree)


def is_helper_of(pid: int | str, daemon: int) -> bool:
    """Whether process `pid` is a syncfs helper that process `daemon` started: with
    `--fd` it holds a descriptor of the mount for the daemon, and ends with it (a
    check for files still open in a mount must not count it as a user's)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return False
    return parent == daemon and any(arg.endswith(b"/mount/flusher.py") for arg in argv[:3])


def _check_banner(banner: bytes) -> None:
    if banner != BANNER:
        raise OSError(f"the syncfs helper speaks {banner!r}, not {BANNER!r} "
                      "(slsfs was upgraded under a running mount: remount)")


def _check_answer(answer: bytes) -> None:
    err = int(answer)
    if err:
        raise OSError(err, f"syncfs of the mount: {os.strerror(err)}")


def _command(mountpoint: str, held_fd: int | None = None, device: str | None = None) -> list[str]:
    which = ["--fd", str(held_fd)] if held_fd is not None else ["--device", device] if device else []
    return [sys.executable, "-I", os.path.abspath(__file__), str(mountpoint), *which]


class Flusher:
    """The daemon's side: one helper process per mount. Requests are written by `request`
    (any thread); their answers are read in the trio thread (`answer`, `answered`)."""

    EXIT_WAIT_S = 1.0

    def __init__(self, process, held_fd: int | None = None) -> None:
        """`process`: the helper (a trio.Process)."""
        import trio
        self.process = process
        self.held_fd = held_fd
        self._lock = trio.Lock()           # one reader of the helper's output at a time
        self._greeted = False
        import threading
        self._writing = threading.Lock()   # a request written and numbered at once (any thread)
        self._closed = False               # (under _writing: no request once the input is closed)
        self._sent = 0                     # requests written
        self._read = 0                     # answers read
        self._answers: dict[int, bytes] = {}   # answers read that their requester has not taken
        self._pending = b""                # the helper's output read but not yet split into lines

    @classmethod
    async def start(cls, mountpoint: str, held_fd: int | None = None, device: str | None = None) -> "Flusher":
        """The helper of the mount at `mountpoint` (of file system `device`, "major:minor":
        the helper then follows it to another of its mounts once that one is gone);
        `held_fd`: a descriptor of the mount's root that the caller keeps open while the
        helper runs, which the helper then syncfs()es instead of opening the mount for each
        request."""
        import subprocess

        import trio
        process = await trio.lowlevel.open_process(_command(mountpoint, held_fd, device), stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE,
                                                   pass_fds=() if held_fd is None else (held_fd,))
        return cls(process, held_fd)

    async def ready(self) -> None:
        """Wait until the helper has started (its banner read; once): a syncfs that must be
        quick (inside a group's stop) must not wait for an interpreter's start (100-200 ms)."""
        async with self._lock:
            await self._greet()

    async def _greet(self) -> None:
        if not self._greeted:
            _check_banner(await self._line())
            self._greeted = True

    def request(self) -> int:
        """Ask the helper for a syncfs, from any thread, without waiting for it; the
        request's number, for `answer`. Raises OSError once the helper's input is closed."""
        with self._writing:
            if self._closed:
                raise OSError(errno.EPIPE, "the syncfs helper is closed")
            try:
                os.write(self.process.stdin.fileno(), b"s")     # (one byte: a pipe write is atomic)
            except BrokenPipeError:
                raise OSError(errno.EPIPE, f"the syncfs helper (pid {self.process.pid}) exited") from None
            self._sent += 1
            return self._sent

    async def syncfs(self) -> None:
        """syncfs the mount in the helper; the trio thread keeps answering meanwhile."""
        await self.answer(self.request())

    async def answer(self, number: int) -> None:
        """Wait for the answer to request `number` (trio thread); raises its error."""
        async with self._lock:
            await self._greet()
            while number not in self._answers:
                self._note_answer(await self._line())
        self.take(number)

    def answered(self, number: int) -> bool:
        """Whether request `number` is answered, found without waiting (trio thread): what
        the helper wrote so far is read; False while another task reads the output."""
        if self._lock.locked() or not self._greeted:
            return False
        while number not in self._answers:
            line = self._buffered_line()
            if line is None:
                try:
                    chunk = os.read(self.process.stdout.fileno(), 4096)   # (non-blocking: trio's stream)
                except BlockingIOError:
                    return False
                if not chunk:
                    return False           # (the helper exited: answer() says so)
                self._pending += chunk
            else:
                self._note_answer(line)
        return True

    def take(self, number: int) -> None:
        """Take the answer to request `number`, once `answered`; raises its error."""
        _check_answer(self._answers.pop(number))

    def _note_answer(self, line: bytes) -> None:
        """`line` answers the oldest request not yet answered."""
        self._read += 1
        self._answers[self._read] = line

    def _buffered_line(self) -> bytes | None:
        """The next whole line of what was read of the helper's output, if there is one."""
        if b"\n" not in self._pending:
            return None
        line, self._pending = self._pending.split(b"\n", 1)
        return line + b"\n"

    async def _line(self) -> bytes:
        """The helper's next line (the banner, then one answer per request, in order)."""
        while (line := self._buffered_line()) is None:
            chunk = await self.process.stdout.receive_some(4096)
            if not chunk:
                raise OSError(f"the syncfs helper (pid {self.process.pid}) exited "
                              f"with status {self.process.returncode}")
            self._pending += chunk
        return line

    async def close(self) -> None:
        """End the helper once a syncfs in flight has its answer: end of input, then a kill
        if it does not go within EXIT_WAIT_S (it may sleep in a syncfs until the kernel ends
        the connection: then it is not waited for). A helper with every request answered
        is killed at once: it has nothing left to do, and its interpreter's orderly exit
        took 5-9 ms of every unmount (a restore in place waits for it)."""
        import trio
        with trio.move_on_after(self.EXIT_WAIT_S) as scope:
            scope.shield = True
            async with self._lock:
                with self._writing:
                    self._closed = True
                    idle = self._read == self._sent
                await self.process.stdin.aclose()
            if idle:
                self.process.kill()
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[3]) if sys.argv[2:3] == ["--fd"] else None,
          sys.argv[3] if sys.argv[2:3] == ["--device"] else None)
