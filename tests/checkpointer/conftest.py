"""Fixtures for the checkpointer tests: compiled targets, a store, processes that are
always killed (whole PID namespaces included), a reaper for orphans. Helpers (polling
with generous deadlines, output checks) are in ckpt_helpers.py."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from contextlib import suppress
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
        """SIGKILL the target's process group, and every process of its session: a job it
        put in a group of its own (tstp_job.py) outlives its parent otherwise."""
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _session_members(proc.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()

    def cleanup(self) -> None:
        for restored in self.restored:
            restored.kill()
        for proc in self.started:
            self.kill(proc)


def _session_members(sid: int) -> list[int]:
    """The processes of session `sid` (field 6 of /proc/PID/stat)."""
    members = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue                 # not a process, or it exited meanwhile
        if int(fields[3]) == sid:
            members.append(int(entry))
    return members


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    yield p
    p.cleanup()


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
