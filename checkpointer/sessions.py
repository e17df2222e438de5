"""Sessions and process groups at restore, including those whose leader has exited.

A session or process group lives on after its leader exits: a daemon that forked twice
runs in the session its dead first child made, and a pipeline's processes stay in the
group of a first stage that has finished. Such an id belongs to no process of the image,
and the kernel only makes sessions by setsid() and groups by setpgid() in a process
whose PID becomes the id. So restore makes a short-lived stand-in with that PID
(`StandIns`): for a session, a child of the member's parent that calls setsid() and
clones the member with CLONE_PARENT (the member inherits the session, its parent stays
the right one); for a group, a child of a member that calls setpgid(0, 0) so that the
others can join. Stand-ins exit once every process is in place and their parents reap
them, as CRIU's restore does with its helpers. The same stand-in makes what an exited
process made for one of the image (`for_exited`: a socketpair, whose SO_PEERCRED names
its maker), until the files are made. A process in a session whose leader is in
the image but whose parent is not in it (an orphan re-parented to a subreaper or the
namespace's init, as zdtm's session00 makes) is cloned with CLONE_PARENT by a child of
its parent that is in that session (the leader itself, typically): siblings are made
session leaders first (`leaders_first`). A leader that is a zombie of the image (exited,
not reaped yet) does the same: its stub lives until every process is made.

Simplifications: one session stand-in per session, so members whose parent is outside
the session must share one parent (others keep their parent's session, with a warning;
so does an orphan whose parent has no child in the orphan's session). A process joins a
session only by being forked inside it, and the stand-in's place gives its session to
the children of one parent (CLONE_PARENT); members left to other parents got there by
re-parenting (a subreaper when their parent exited: zdtm session02), which a restore would
have to replay: stand-ins below every such parent at once, processes born in a session
they later left, subreaper flags set while each stand-in exits, in an order that depends
on every other session's placement. CRIU does not either (its helpers serve members
re-parented to the root only; otherwise "Can't find a session leader"). Also: a group
whose leader is a zombie of the image is not recreated (a warning); the PIDs of
stand-ins must be free, which they are in a new PID namespace.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Callable

from . import kernel, procfs, stub
from .builder import CLONE_PARENT, clone
from .errors import CheckpointError
from .inject import Injector
from .kernel import NR

WNOHANG = 1


class StandIns:
    """The stand-ins of one restore for leaders that are not in the image."""

    def __init__(self, processes: list[dict], injectors: list[Injector], warnings: list[str],
                 make_injector: Callable[[int], Injector]):
        self.pids = {meta["pid"] for meta in processes}
        self.injectors, self.warnings, self.make_injector = injectors, warnings, make_injector
        self.session_of: dict[int, int | None] = {}     # host tid of a task made here -> its session id
        self.sessions: dict[int, tuple[Injector, Injector]] = {}   # sid -> (stand-in's parent, stand-in)
        self.made: list[tuple[Injector, Injector, int]] = []       # (parent, stand-in, its PID there)
        self.exited: dict[int, Injector | None] = {}    # PID -> stand-in for an exited process (for_exited)

    def creator(self, parent: Injector, meta: dict) -> tuple[Injector, int]:
        """The task that clones `meta`'s process and the clone flags: `parent`, or the
        stand-in for its session's exited leader."""
        sid = meta.get("sid")
        if (not sid or sid == meta["pid"]       # 0: a session from outside the namespace
                or self.session_of.get(parent.tid) == sid):
            return parent, 0
        if sid in self.pids:
            return self._sibling_in(parent, sid, meta)
        if sid not in self.sessions:
            helper = self._stand_in(parent, sid, f"process {meta['pid']}: its session or group {sid}")
            if helper is None:
                return parent, 0
            helper.check(NR["setsid"], what=f"setsid (standing in for the exited leader of session {sid})")
            self.sessions[sid] = (parent, helper)
            self.session_of[helper.tid] = sid
        helper_parent, helper = self.sessions[sid]
        if helper_parent is not parent:
            self.warnings.append(f"process {meta['pid']}: its session {sid} could not be recreated (its "
                                 "leader has exited and other members have another parent)")
            return parent, 0
        return helper, CLONE_PARENT

    def _sibling_in(self, parent: Injector, sid: int, meta: dict) -> tuple[Injector, int]:
        """The creator of a process in session `sid` (its leader in the image) whose parent
        is in another one (an orphan re-parented to a subreaper or the namespace's init
        after the process that forked it exited): a child of `parent` already in that
        session (its leader, say), which clones it with CLONE_PARENT (CRIU re-parents such
        orphans through a helper); or `parent`, with a warning, if there is none."""
        for tid, session in self.session_of.items():
            if session == sid and _parent_of(tid) == parent.tid:
                return next(inj for inj in self.injectors if inj.tid == tid), CLONE_PARENT
        self.warnings.append(f"process {meta['pid']}: its session {sid} could not be recreated (its parent is "
                             "in another session, and no other child of that parent is in it)")
        return parent, 0

    def note(self, inj: Injector, creator: Injector) -> None:
        """Remember the session the new task `inj` is in: its creator's."""
        self.session_of[inj.tid] = self.session_of.get(creator.tid)

    def note_setsid(self, inj: Injector, meta: dict) -> None:
        """Remember that `inj` (the process of `meta`) has made its own session."""
        self.session_of[inj.tid] = meta["pid"]

    def join_groups(self, live: list[dict], stubs: dict[int, Injector]) -> None:
        """Every process (zombies to be included) into its process group (a stand-in leads
        a group whose leader has exited). A zombie of an image before version 9 has none."""
        for meta in live:
            pgid = meta.get("pgid", 0)
            if pgid == meta["pid"] or meta.get("sid") == meta["pid"] or not pgid:
                continue
            inj = stubs[meta["pid"]]
            if inj.call(NR["setpgid"], 0, pgid) < 0 and pgid not in self.pids:
                if (helper := self._stand_in(inj, pgid, f"process {meta['pid']}: its session or group {pgid}")) \
                        is not None:
                    helper.check(NR["setpgid"], 0, 0, what=f"setpgid (standing in for the exited leader of group {pgid})")
            if inj.call(NR["setpgid"], 0, pgid) < 0:
                self.warnings.append(f"process {meta['pid']}: its process group {pgid} could not be recreated")

    def for_exited(self, parent: Injector, pid: int) -> Injector | None:
        """A stopped child of `parent` with PID `pid`, standing in for a process that is not
        in the image (it had exited) to make what it made; the same one for each call until
        `dismiss`. None for a PID of the image, or one taken here (with a warning)."""
        if pid in self.pids:
            return None
        if pid not in self.exited:
            self.exited[pid] = self._stand_in(parent, pid, f"process {pid} (not in the image), which made a "
                                              "socketpair (SO_PEERCRED names it),")
        return self.exited[pid]

    def dismiss(self) -> None:
        """Let every stand-in exit and have its parent reap it."""
        for _, helper, _ in self.made:
            stub.exit_when_let_go(helper.tid, 0)
            kernel.set_sigmask(helper.tid, 0)
            kernel.detach(helper.tid)
        deadline = time.monotonic() + 30
        for parent, _, pid in self.made:
            while parent.call(NR["wait4"], pid, 0, kernel.WALL | WNOHANG, 0) == 0:
                if time.monotonic() > deadline:
                    raise CheckpointError(f"a restore stand-in (PID {pid}) did not exit")
                time.sleep(0.001)
            parent.take_pending(signal.SIGCHLD)
        self.made.clear()
        self.exited.clear()

    def _stand_in(self, parent: Injector, pid: int, what: str) -> Injector | None:
        """A stopped child of `parent` with PID `pid`, or None (with a warning that `what`
        could not be recreated) if that PID is taken here."""
        try:
            helper = self.make_injector(clone(parent, [pid]))
        except CheckpointError as exc:
            self.warnings.append(f"{what} could not be recreated ({exc})")
            return None
        self.injectors.append(helper)
        self.made.append((parent, helper, _numbered_by_parent(helper.tid, parent.tid)))
        return helper


def _numbered_by_parent(tid: int, parent: int) -> int:
    """Task `tid` as the PID namespace of its parent, task `parent`, numbers it (the parent
    may be outside the namespace its children are made in: the launcher)."""
    depth = len(procfs.status(parent)["NSpid"].split())
    return int(procfs.status(tid)["NSpid"].split()[depth - 1])


def _parent_of(tid: int) -> int:
    """The host PID of the parent of task `tid`."""
    with open(f"/proc/{tid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[1])


def leaders_first(siblings: list[dict]) -> list[dict]:
    """Siblings to be made, session leaders first: a sibling in a leader's session but
    orphaned to the same parent is cloned by that leader (StandIns._sibling_in)."""
    return sorted(siblings, key=lambda meta: meta.get("sid") != meta["pid"])


def stop_signal(tid: int, meta: dict) -> int:
    """The signal that stops a restored process (host PID `tid`) in its job-control stop
    again: the one that stopped it (version 9: `stop_signal`), so that its parent's
    waitid() sees SIGTSTP after a ^Z, or SIGSTOP when the kernel would discard that one:
    SIGTSTP, SIGTTIN and SIGTTOU are not delivered to an orphaned process group (POSIX),
    which a group can become when its parent outside the image is not restored with it."""
    signo = meta.get("stop_signal", signal.SIGSTOP)
    return signal.SIGSTOP if signo != signal.SIGSTOP and _orphaned_group(tid) else signo


def _orphaned_group(pid: int) -> bool:
    """Is the process group of `pid` orphaned: no member has its parent in another group of
    the same session? (One pass over /proc: only for a process stopped by SIGTSTP & co.)"""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]))   # ppid, pgrp, session
    _, group, session = stats[pid]
    return not any(g == group and ppid in stats and stats[ppid][1] != group and stats[ppid][2] == session
                   for ppid, g, _ in stats.values())
