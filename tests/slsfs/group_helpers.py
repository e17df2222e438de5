"""Helpers and fixtures of the persistence-group tests: compiled targets, and a store whose
daemon, groups and mount are always taken down at teardown (even after SIGKILLs and failures).

A module with a name of its own (imported by conftest.py and by the tests), because every
layer has a conftest.py and `from conftest import` would pick whichever was loaded first."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mount.control import request
from polling import wait_for

TARGETS = Path(__file__).parent / "targets"
# path_logger.py: appends to a log it names by absolute path (each_logs_on_its_own checks)
PATH_LOGGER = Path(__file__).parents[1] / "checkpointer" / "targets" / "path_logger.py"
SLS_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def group_binaries(tmp_path_factory) -> Path:
    """The C targets of tests/slsfs/targets compiled with the system gcc."""
    out = tmp_path_factory.mktemp("group-bin")
    for source in TARGETS.glob("*.c"):
        subprocess.run(["gcc", "-O1", "-g", "-Wall", "-o", str(out / source.stem), str(source)], check=True)
    return out


def read_counter(path) -> int | None:
    """The number a counting target (targets/atomic_counter.c) keeps in `path`, if readable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def autogroup_nice(pid: int) -> int | None:
    """The nice value of the scheduler autogroup `pid` is in ("/autogroup-N nice K"); None
    for the kernel's default autogroup (the file is empty there), which a process is in
    until it or an ancestor calls setsid: PID 1's children, as a CI runner may be."""
    fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    return int(fields[-1]) if fields else None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _processes_using(path: str) -> list[int]:
    """PIDs whose cwd, root or command line is inside `path`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/cwd"), os.readlink(f"/proc/{pid}/root")]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(l == path or l.startswith(path + "/") for l in links) or path in cmdline:
            found.append(int(pid))
    return [p for p in found if p != os.getpid()]


class GroupStore:
    """A store at tmp/store (mounted by its daemon at tmp/store.mnt) and the `sls` CLI."""

    def __init__(self, tmp: Path):
        self.path = tmp / "store"
        self.mnt = tmp / "store.mnt"
        self.sls("init", str(self.path))

    @classmethod
    def to_receive(cls, path: Path, mnt: Path) -> "GroupStore":
        """One for a store at `path` not made yet (`sls recv` makes it), mounted at `mnt`."""
        store = cls.__new__(cls)
        store.path, store.mnt = path, mnt
        return store

    def sls(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True,
                                timeout=SLS_TIMEOUT_S)
        if check and result.returncode != 0:
            log = (self.path / "daemon.log")
            tail = log.read_text()[-3000:] if log.exists() else ""
            pytest.fail(f"sls {' '.join(args)} failed ({result.returncode}): {result.stderr}\n"
                        f"its output:\n{result.stdout[-3000:]}\ndaemon.log tail:\n{tail}")
        return result

    def ps(self) -> dict:
        """The daemon's `ps` reply (through the socket: a CLI start costs ~1 s on a busy VM)."""
        return request(self.path, "ps")

    def checkpoint(self, group: str) -> int:
        return request(self.path, "group_checkpoint", group=group)["checkpoint"]

    def run_tcp_server(self, name: str) -> int:
        """Start targets/tcp_greeter.py as group `name` on a free loopback port, listening;
        the port."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.sls("run", "--store", str(self.path), "--name", name, "--hz", "5", "--",
                 sys.executable, str(TARGETS / "tcp_greeter.py"), str(port))
        wait_for(lambda: (self.mnt / "ready").exists(), "the server to listen")
        return port

    def group(self, name: str) -> dict:
        groups = {g["group"]: g for g in self.ps()["groups"]}
        assert name in groups, f"group {name} is not running: {groups}"
        return groups[name]

    def crash(self) -> None:
        """SIGKILL the daemon and every process of every group."""
        status = self.ps()
        for g in status["groups"]:
            for pid in g["pids"]:
                _kill(pid)
        if status["daemon"]:
            _kill(status["daemon"])
        wait_for(lambda: not status["daemon"] or not _alive(status["daemon"]), "the daemon to die")

    def cleanup(self) -> None:
        if any(_processes_using(str(self.path))):
            self.sls("stop", "--store", str(self.path), check=False)
        for _ in range(3):
            pids = _processes_using(str(self.mnt)) + _processes_using(str(self.path))
            if not pids:
                break
            for pid in pids:
                _kill(pid)
            time.sleep(0.2)
        with open("/proc/mounts") as f:
            mounted = any(line.split()[1] == str(self.mnt) for line in f)
        if mounted:
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False, capture_output=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def group_store(tmp_path):
    s = GroupStore(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def log_lines(path: Path) -> list[tuple[int, str]]:
    """path_logger.py's whole lines: (number, working directory)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [(int(n), cwd) for n, cwd in (line.split(" ", 1) for line in text.splitlines(keepends=True)
                                         if line.endswith("\n"))]


def each_logs_on_its_own(directories: list[Path], seen_at: Path) -> None:
    """Wait until path_logger.py's log grows in each of `directories`, then check that
    each holds one program's lines only (numbered 1, 2, ... with no gap or repeat) and that
    the program saw itself in `seen_at`."""
    grown = {d: len(log_lines(d / "log")) for d in directories}
    wait_for(lambda: all(len(log_lines(d / "log")) > grown[d] + 20 for d in grown),
             f"the log to grow in each of {directories}")
    for directory in directories:
        lines = log_lines(directory / "log")
        assert [n for n, _ in lines] == list(range(1, len(lines) + 1)), f"{directory}/log mixes two logs"
        assert {cwd.strip() for _, cwd in lines} == {str(seen_at)}, f"{directory}/log: the working directory"
