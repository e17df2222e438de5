"""Pseudo-terminals: a pty master and its slaves come back as a new pair, settings kept.

What: `describe_master(pid, fd, fdinfo)` records a pty master (an fd on /dev/ptmx): the
index of its pair, the terminal settings (termios), window size and packet mode, and the
bytes waiting in it: output the slave side wrote that the master's holder has not read,
and input the master's holder wrote that the slave side has not read. `make_master(builder,
record)` opens /dev/ptmx inside a restored process and gives the new pair those settings and
bytes; its slave is then /dev/pts/<new index>. `controlling(status_fields, ...)` reads which pty is a session's
controlling terminal and its foreground process group; `take_control(inj, index, pgid)`
makes them so again in the restored session leader.
Why: terminal multiplexers (tmux, screen), `script`, expect-style drivers and the shells
they run hold both ends of ptys; a shell's job control needs its controlling terminal
and foreground group back.

Waiting bytes are kept because a program that polled its terminal and saw it readable
then reads it with a blocking read: dropping them left it waiting for ever. Reading them is
destructive, so the checkpoint writes them back at once (the processes are frozen, so
nobody sees the difference), and with the terminal's processing switched off while it does
(output processing for output, input processing and echo for input): written back, they
are the bytes that were there, not processed twice.

Input waiting for a slave in canonical mode (a program reading whole lines; the line a user
is typing) is read out with ICANON off, which makes its unfinished line readable too, and
given back with ICANON on, one byte at a time with TIOCSTI (processed at once, unlike a
write to the master), its editing characters disabled: the complete lines and the
unfinished one are where they were.

Simplifications: a line ended by VEOF (an end-of-file, when typed on an empty line) reads
out with a NUL where VEOF was, and every NUL of canonical input is given back as VEOF; dropped at restore (counted
in a warning) are a backed-up side's bytes (KEPT_AT_MOST: a program writing faster than its
terminal is read) and canonical input when the checkpoint runs without CAP_SYS_ADMIN (which TIOCSTI needs); a packet-mode master's
status bytes are dropped (its data is kept); the new pair has another index, so a program that kept its terminal's name
sees a stale one; a slave lock (before unlockpt) is not kept; only the host's /dev/ptmx
(not a private devpts instance). Linux gives a controlling terminal only to a
session leader's TIOCSCTTY and through fork: the restorer makes such a pair itself, before
the session's other processes are forked from the leader, and hands the master over
(SCM_RIGHTS) to its holder once that one is built.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import os
import select
import stat
import struct
import termios
import time

from . import kernel
from .errors import CheckpointError

MASTER_DEVICE = (5, 2)                  # /dev/ptmx (and /dev/pts/ptmx)
PTS_PREFIX = "/dev/pts/"
PTS_MAJORS = range(136, 144)           # Unix98 pty slaves
TCGETS, TCSETS, TIOCGWINSZ, TIOCSWINSZ = 0x5401, 0x5402, 0x5413, 0x5414
TIOCSCTTY, TIOCSPGRP, TIOCPKT, FIONREAD, TIOCSTI = 0x540E, 0x5410, 0x5420, 0x541B, 0x5412
TIOCGPTN, TIOCSPTLCK, TIOCGPKT, TIOCGPTPEER = 0x80045430, 0x40045431, 0x80045438, 0x5441
TERMIOS_SIZE = 36                       # the kernel's struct termios (TCGETS/TCSETS)
CAP_SYS_ADMIN = 21
CC_OFFSET = 17                          # its c_cc: after c_iflag, c_oflag, c_cflag, c_lflag and c_line
# Waiting bytes are taken out (and put back) only while a side's line discipline holds
# fewer than this (of the 4095 it takes): a full one is backed up and has more behind it
# in the kernel's flip buffers, and how much of that fits again depends on the sizes it was
# first written in (measured here: 15-22 KiB), so the running program could lose the rest.
KEPT_AT_MOST = 4000
_NR_IOCTL = 16
O_RDWR, O_NOCTTY = 0o2, 0o400


def _int_ioctl(fd: int, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, request, bytes(4)))[0]


def describe_master(pid: int, fd: int, fdinfo: dict[str, str]) -> dict:
    """The record of a pty master that process `pid` holds at `fd`."""
    dup = kernel.borrow_fd(pid, fd)
    try:
        settings = fcntl.ioctl(dup, TCGETS, bytes(TERMIOS_SIZE))
        packet = bool(_int_ioctl(dup, TIOCGPKT))
        slave = _slave_of(dup, os.O_RDWR)
        try:
            st = os.fstat(slave)
            output, dropped = b"", _int_ioctl(dup, FIONREAD)
            if dropped < KEPT_AT_MOST:
                output, dropped = _take_output(dup, packet), 0
                _give_output(slave, settings, output)
            input_, waiting = b"", _int_ioctl(slave, FIONREAD)   # canonical: its complete lines
            if waiting >= KEPT_AT_MOST:
                dropped += waiting
            elif _canonical(settings) and not _may_feed_input():
                dropped += waiting
            elif _canonical(settings):
                input_ = _take_canonical_input(slave, settings)
                if not _give_canonical_input(slave, settings, input_):
                    raise CheckpointError(f"the input waiting in pseudo-terminal {fdinfo.get('tty-index')} "
                                          "could not be put back (TIOCSTI refused)")
            else:
                input_ = _drain(slave)
                _give_input(dup, slave, settings, input_)
        finally:
            os.close(slave)
        return {"kind": "pty_master", "index": int(fdinfo.get("tty-index") or _int_ioctl(dup, TIOCGPTN)),
                "termios": settings.hex(), "winsize": fcntl.ioctl(dup, TIOCGWINSZ, bytes(8)).hex(),
                "packet": packet, "queued": dropped, "output": output.hex(), "input": input_.hex(),
                "slave": [st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)]}
    finally:
        os.close(dup)


def _canonical(settings: bytes) -> bool:
    return bool(struct.unpack_from("4I", settings)[3] & termios.ICANON)


def _with_flags(settings: bytes, iflag: int, oflag: int, lflag_off: int) -> bytes:
    """The termios `settings` with c_iflag and c_oflag masked by `iflag`/`oflag` and the
    `lflag_off` local flags cleared."""
    i, o, c, lf = struct.unpack_from("4I", settings)
    return struct.pack("4I", i & iflag, o & oflag, c, lf & ~lflag_off) + settings[16:]


def _reads(fd: int) -> list[bytes]:
    """Every read's bytes from a non-blocking tty fd until none are left. An empty read
    queue makes the kernel finish passing on what it still held in its flip buffers first,
    so nothing stays behind."""
    reads = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:        # EAGAIN: all read; EIO: the other side is closed
            return reads
        if not chunk:
            return reads
        reads.append(chunk)


def _drain(fd: int) -> bytes:
    return b"".join(_reads(fd))


def _take_output(master: int, packet: bool) -> bytes:
    """The bytes waiting to be read from a master that another process holds, read out
    (its file's O_NONBLOCK is set for the read and put back: the holder is frozen). In
    packet mode each read starts with a status byte: data reads keep the rest."""
    flags = fcntl.fcntl(master, fcntl.F_GETFL)
    fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        if packet:
            return b"".join(chunk[1:] for chunk in _reads(master) if chunk[:1] == b"\0")
        return _drain(master)
    finally:
        fcntl.fcntl(master, fcntl.F_SETFL, flags)


def _give_output(slave: int, settings: bytes, output: bytes) -> None:
    """Put `output` back where the master reads it: written through the slave with output
    processing off (it was processed when first written), then the settings as they were."""
    if output:
        fcntl.ioctl(slave, TCSETS, _with_flags(settings, 0xFFFFFFFF, ~termios.OPOST, 0))
        try:
            _write_all(slave, output, "output")
        finally:
            fcntl.ioctl(slave, TCSETS, settings)


def _give_input(master: int, slave: int, settings: bytes, input_: bytes) -> None:
    """Put `input_` back where a non-canonical slave reads it: written through the master
    with input processing, signal characters and echo off (it was processed, and echoed,
    when first written), then the settings as they were once the kernel has passed it all
    to the slave (it does so after the write returns)."""
    if not input_:
        return
    fcntl.ioctl(slave, TCSETS, _with_flags(settings, 0, 0xFFFFFFFF, termios.ECHO | termios.ECHONL |
                                           termios.ISIG | termios.IEXTEN))
    try:
        _write_all(master, input_, "input")
        deadline = time.monotonic() + 2.0
        while _int_ioctl(slave, FIONREAD) < len(input_):
            if time.monotonic() > deadline:
                raise CheckpointError(f"a pseudo-terminal took its {len(input_)} waiting bytes of input back "
                                      "too slowly: they could not be kept")
            time.sleep(0.0002)
    finally:
        fcntl.ioctl(slave, TCSETS, settings)


@functools.cache
def _may_feed_input() -> bool:
    """Whether we hold CAP_SYS_ADMIN, which TIOCSTI on a terminal other than our own needs:
    without it, canonical input cannot be put back, so it is not taken out. (Read once: it
    is asked for every line-mode pty at every checkpoint, inside the stop.)"""
    with open("/proc/self/status") as status:
        caps = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> CAP_SYS_ADMIN & 1)


def _take_canonical_input(slave: int, settings: bytes) -> bytes:
    """All the input waiting for a canonical slave, its unfinished line included: read
    with ICANON off, which makes every byte in the line discipline readable. The slave is
    left with ICANON off: _give_canonical_input puts the bytes and the settings back."""
    fcntl.ioctl(slave, TCSETS, _with_flags(settings, 0xFFFFFFFF, 0xFFFFFFFF, termios.ICANON))
    try:
        return _drain(slave)
    except BaseException:
        fcntl.ioctl(slave, TCSETS, settings)
        raise


def _give_canonical_input(slave: int, settings: bytes, input_: bytes) -> bool:
    """Put `input_` back as a canonical slave's waiting input, then its `settings`: fed
    to its line discipline byte by byte (TIOCSTI) with ICANON on, so that newlines and
    VEOL end lines again, and with input processing, echo, signal characters and editing
    (VERASE, VKILL: set to a byte the input does not hold) off; a NUL is a pending
    end-of-file, given back as VEOF. False if the kernel refuses TIOCSTI (or the input
    holds every byte value)."""
    try:
        if not input_:
            return True
        cc = bytearray(settings[CC_OFFSET:])
        if cc[termios.VEOF]:
            input_ = input_.replace(b"\0", bytes([cc[termios.VEOF]]))
        unused = next((b for b in range(1, 256) if b not in input_ and b not in cc), None)
        if unused is None:
            return False
        cc[termios.VERASE] = cc[termios.VKILL] = unused
        fcntl.ioctl(slave, TCSETS, _with_flags(settings[:CC_OFFSET] + bytes(cc), 0, 0xFFFFFFFF,
                                               termios.ECHO | termios.ECHONL | termios.ISIG | termios.IEXTEN))
        try:
            for byte in input_:
                fcntl.ioctl(slave, TIOCSTI, bytes([byte]))
        except OSError as exc:      # EPERM, or EIO where legacy TIOCSTI is off: CAP_SYS_ADMIN only
            if exc.errno not in (errno.EPERM, errno.EIO):
                raise
            return False
        return True
    finally:
        fcntl.ioctl(slave, TCSETS, settings)


def _write_all(fd: int, data: bytes, what: str) -> None:
    """Write all of `data` to a non-blocking tty fd, waiting for room as the kernel passes
    earlier bytes on (they fitted before they were read out, so they fit again)."""
    view, deadline = memoryview(data), time.monotonic() + 5.0
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            if not select.select([], [fd], [], max(0.0, deadline - time.monotonic()))[1]:
                raise CheckpointError(f"a pseudo-terminal took {len(data) - len(view)} of its {len(data)} "
                                      f"waiting bytes of {what} back, the rest not within 5 s") from None


def _slave_of(master: int, access: int = os.O_RDONLY) -> int:
    """A non-blocking fd of the master's slave (TIOCGPTPEER: whichever devpts it is in),
    not becoming our controlling terminal."""
    return fcntl.ioctl(master, TIOCGPTPEER, access | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)


def host_slave_path(st: os.stat_result) -> str | None:
    """/dev/pts/N for a pty slave (`st`: its stat) of the host's devpts, however the holder
    reaches it (a --root group's /dev/pts is a bind of the host's: the daemon reads
    <mount>/dev/pts/N); None for any other device, or a slave of another devpts instance."""
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if major not in PTS_MAJORS:
        return None
    try:
        host = os.stat(PTS_PREFIX).st_dev
    except OSError:
        return None
    return f"{PTS_PREFIX}{_pts_index(major, minor)}" if st.st_dev == host else None


def _pts_index(major: int, minor: int) -> int:
    """N of /dev/pts/N, the slave whose device number is (`major`, `minor`)."""
    return (major - PTS_MAJORS.start) * 256 + minor


def slave_index(path: str) -> int | None:
    """N for /dev/pts/N, else None."""
    rest = path[len(PTS_PREFIX):] if path.startswith(PTS_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


def make_master(builder, record: dict) -> tuple[int, int]:
    """(fd in the restored process, new index): a new pty master with the record's settings
    and its slave unlocked."""
    path = builder.inj.put(b"/dev/ptmx\0")
    fd = builder.inj.check(kernel.NR["openat"], -100, path, O_RDWR | O_NOCTTY | (record["flags"] & os.O_NONBLOCK),
                           what="open(/dev/ptmx)")
    dup = kernel.borrow_fd(builder.tid, fd)
    try:
        return fd, _configure(dup, record)
    finally:
        os.close(dup)


def make_master_here(record: dict) -> tuple[int, int]:
    """(our fd, new index): a new pty master with the record's settings, held by the
    restorer until the process that holds it in the image is built (files.FileRestorer)."""
    fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | (record["flags"] & os.O_NONBLOCK))
    return fd, _configure(fd, record)


def _configure(fd: int, record: dict) -> int:
    """Give a new master the record's settings, unlock its slave; its index."""
    fcntl.ioctl(fd, TIOCSPTLCK, struct.pack("i", 0))
    fcntl.ioctl(fd, TCSETS, bytes.fromhex(record["termios"]))
    fcntl.ioctl(fd, TIOCSWINSZ, bytes.fromhex(record["winsize"]))
    if record["packet"]:
        fcntl.ioctl(fd, TIOCPKT, struct.pack("i", 1))
    slave = _slave_of(fd, os.O_RDWR)
    try:
        if "slave" in record:     # version 4: the slave's owner and mode (grantpt() may have set them)
            uid, gid, mode = record["slave"]
            os.fchown(slave, uid, gid)
            os.fchmod(slave, mode)
        settings = bytes.fromhex(record["termios"])     # version 8: the bytes that were waiting
        _give_output(slave, settings, bytes.fromhex(record.get("output", "")))
        input_ = bytes.fromhex(record.get("input", ""))
        if not _canonical(settings):
            _give_input(fd, slave, settings, input_)
        elif not _give_canonical_input(slave, settings, input_):      # version 11: a line reader's
            raise CheckpointError(f"the {len(input_)} bytes of input waiting in a pseudo-terminal cannot "
                                  "be given back: TIOCSTI is refused here (it needs CAP_SYS_ADMIN)")
    finally:
        os.close(slave)
    return _int_ioctl(fd, TIOCGPTN)


def controlling(stat_fields: list[str]) -> tuple[int | None, int]:
    """(pty index of the controlling terminal or None, foreground process group as the
    reader sees it) from procfs.stat_fields (tty_nr and tpgid, fields 7 and 8)."""
    tty_nr, tpgid = int(stat_fields[6]), int(stat_fields[7])
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if major not in PTS_MAJORS:
        return None, tpgid
    return _pts_index(major, minor), tpgid


def take_control(inj, index: int, foreground: int | None, what: str) -> None:
    """Make /dev/pts/`index` the controlling terminal of the session that `inj`'s process
    leads (a no-op if it is already), with `foreground` (a process group of the session, if
    given) in the foreground."""
    path = inj.put(f"{PTS_PREFIX}{index}".encode() + b"\0")
    fd = inj.check(kernel.NR["openat"], -100, path, O_RDWR | O_NOCTTY, what=f"{what}: open({PTS_PREFIX}{index})")
    try:
        if inj.call(_NR_IOCTL, fd, TIOCSCTTY, 0) < 0:
            raise CheckpointError(f"{what}: the terminal could not be made the session's controlling "
                                  "terminal again")
        if foreground:
            inj.call(_NR_IOCTL, fd, TIOCSPGRP, inj.put(struct.pack("i", foreground)))
    finally:
        inj.call(kernel.NR["close"], fd)
