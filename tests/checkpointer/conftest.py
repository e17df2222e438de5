"""Fixtures for the checkpointer tests: compiled targets, a store, processes that are
always killed (whole PID namespaces included) and polling with generous deadlines."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from objectstore import Store

TARGETS = Path(__file__).parent / "targets"
PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(scope="session")
def binaries(tmp_path_factory) -> Path:
    """The C targets compiled with the system gcc."""
    out = tmp_path_factory.mktemp("ckpt-bin")
    for source in TARGETS.glob("*.c"):
        subprocess.run(["gcc", "-O1", "-Wall", "-pthread", "-o", str(out / source.stem), str(source)],
                       check=True)
    return out


@pytest.fixture
def store(tmp_path):
    s = Store.init(tmp_path / "store")
    yield s
    s.close()


class Processes:
    """Starts targets in their own session and kills them (and restored trees) at teardown."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[subprocess.Popen] = []
        self.restored: list = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        kwargs.setdefault("cwd", self.workdir)
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def python(self, script: str, *args: str, **kwargs) -> subprocess.Popen:
        return self.start([sys.executable, str(TARGETS / script), *args], **kwargs)

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def cleanup(self) -> None:
        for restored in self.restored:
            restored.kill()
        for proc in self.started:
            self.kill(proc)


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    yield p
    p.cleanup()


def wait_for(predicate, what: str, timeout: float = 60.0):
    """Poll until predicate() is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def ok_lines(path: Path) -> list[str]:
    """Complete lines of a target's output file."""
    text = path.read_text(errors="replace")
    return text.split("\n")[:-1]


def assert_unbroken(path: Path, pid: int) -> int:
    """The file holds one unbroken sequence 1..N of "<n> <pid> ... ok" lines; returns N."""
    expected = 1
    for line in ok_lines(path):
        assert "BAD" not in line, f"target reported: {line}"
        if line.startswith("usr1"):
            continue
        fields = line.split()
        assert fields[-1] == "ok" and int(fields[0]) == expected and int(fields[1]) == pid, \
            f"line {expected} of {path.name} is {line!r}"
        expected += 1
    return expected - 1


def ns_pid(host_pid: int) -> int:
    """The PID a process sees for itself (innermost NSpid)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


@pytest.fixture
def subreaper():
    """Make this test process the reaper of orphans (PID 1 here does not reap them);
    returns reap(pids), which waits for those orphans."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def reap(pids: list[int]) -> None:
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    yield reap
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def state_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
