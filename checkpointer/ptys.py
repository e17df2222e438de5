"""Pseudo-terminals: a pty master and its slaves come back as a new pair, settings kept.

What: `describe_master(pid, fd, fdinfo)` records a pty master (an fd on /dev/ptmx): the
index of its pair, the terminal settings (termios), window size and packet mode, and how many bytes were waiting in it. `make_master(builder, record)` opens
/dev/ptmx inside a restored process and gives the new pair those settings; its slave is
then /dev/pts/<new index>. `controlling(status_fields, ...)` reads which pty is a session's
controlling terminal and its foreground process group; `take_control(inj, index, pgid)`
makes them so again in the restored session leader.
Why: terminal multiplexers (tmux, screen), `script`, expect-style drivers and the shells
they run hold both ends of ptys; a shell's job control needs its controlling terminal
and foreground group back.

Simplifications: bytes queued in the pair when checkpointed are dropped (counted in a
warning); the new pair has another index, so a program that kept its terminal's name
sees a stale one; a slave lock (before unlockpt) is not kept; only the host's /dev/ptmx
(not a private devpts instance). Linux gives a controlling terminal only to a
session leader's TIOCSCTTY and through fork: the restorer makes such a pair itself, before
the session's other processes are forked from the leader, and hands the master over
(SCM_RIGHTS) to its holder once that one is built.
"""
from __future__ import annotations

import fcntl
import os
import stat
import struct

from . import kernel
from .errors import CheckpointError

MASTER_DEVICE = (5, 2)                  # /dev/ptmx (and /dev/pts/ptmx)
PTS_PREFIX = "/dev/pts/"
PTS_MAJORS = range(136, 144)           # Unix98 pty slaves
TCGETS, TCSETS, TIOCGWINSZ, TIOCSWINSZ = 0x5401, 0x5402, 0x5413, 0x5414
TIOCSCTTY, TIOCSPGRP, TIOCPKT, FIONREAD = 0x540E, 0x5410, 0x5420, 0x541B
TIOCGPTN, TIOCSPTLCK, TIOCGPKT, TIOCGPTPEER = 0x80045430, 0x40045431, 0x80045438, 0x5441
TERMIOS_SIZE = 36                       # the kernel's struct termios (TCGETS/TCSETS)
_NR_IOCTL = 16
O_RDWR, O_NOCTTY = 0o2, 0o400


def _int_ioctl(fd: int, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, request, bytes(4)))[0]


def describe_master(pid: int, fd: int, fdinfo: dict[str, str]) -> dict:
    """The record of a pty master that process `pid` holds at `fd`."""
    dup = kernel.borrow_fd(pid, fd)
    try:
        slave = _slave_of(dup)
        try:
            st = os.fstat(slave)
        finally:
            os.close(slave)
        return {"kind": "pty_master", "index": int(fdinfo.get("tty-index") or _int_ioctl(dup, TIOCGPTN)),
                "termios": fcntl.ioctl(dup, TCGETS, bytes(TERMIOS_SIZE)).hex(),
                "winsize": fcntl.ioctl(dup, TIOCGWINSZ, bytes(8)).hex(),
                "packet": bool(_int_ioctl(dup, TIOCGPKT)), "queued": _int_ioctl(dup, FIONREAD),
                "slave": [st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)]}
    finally:
        os.close(dup)


def _slave_of(master: int) -> int:
    """An fd of the master's slave (TIOCGPTPEER: whichever devpts it is in), not becoming
    our controlling terminal."""
    return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)


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
    if "slave" in record:     # version 4: the slave's owner and mode (grantpt() may have set them)
        uid, gid, mode = record["slave"]
        slave = _slave_of(fd)
        try:
            os.fchown(slave, uid, gid)
            os.fchmod(slave, mode)
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
    return (major - PTS_MAJORS.start) * 256 + minor, tpgid


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
