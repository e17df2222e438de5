"""Helpers for the file-system tests: the `sls` command, mount state, one Mount object.

(A module with a unique name, so that test files never import another layer's conftest.)
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polling

SLS_MAIN = "import sys; from slsfs.cli import main; sys.exit(main())"
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 1, 2, 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
MOUNT_DEADLINE_S = 60.0


def sls(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the `sls` command line in a subprocess."""
    result = subprocess.run([sys.executable, "-c", SLS_MAIN, *map(str, args)],
                            capture_output=True, text=True, timeout=120, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"sls {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2), any mode (os.posix_fallocate makes mode 0 only); OSError on failure."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def wait_for(predicate, what: str, timeout: float = MOUNT_DEADLINE_S):
    """polling.wait_for, with a mount's deadline by default."""
    return polling.wait_for(predicate, what, timeout)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Mount:
    """One store mounted at one mount point by a background daemon."""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.store = root / "store"
        self.path = root / "mnt"
        self.path.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self.pid: int | None = None

    def mount(self, *args: str) -> None:
        sls("mount", self.store, self.path, *self.extra_args, *args)
        wait_for(lambda: is_mounted(self.path), f"{self.path} to be mounted")
        self.pid = self.status()["pid"]

    def status(self) -> dict:
        from mount.control import request
        return request(self.store, "status")

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), leaving a stale mount point behind."""
        os.kill(self.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(self.pid), "the killed daemon to go")

    def umount(self) -> None:
        sls("umount", self.path)
        assert not is_mounted(self.path)
        assert not pid_alive(self.pid)

    def cleanup(self) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.pid is not None and pid_alive(self.pid):
            try:
                wait_for(lambda: not pid_alive(self.pid), "daemon exit", timeout=30)
            except AssertionError:
                os.kill(self.pid, signal.SIGKILL)

    def open_store(self, readonly: bool = True):
        from objectstore import Store
        return Store.open(self.store, readonly=readonly)


NOBODY = 65534
# the project venv lives under /root, which nobody may enter: use the system interpreter
SYSTEM_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def probe_as_nobody(probe: str, path) -> dict:
    """Run Python source `probe` (argv[1] = `path`) as uid/gid NOBODY without groups; the
    dict it prints."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    out = subprocess.run([SYSTEM_PYTHON, "-c", probe, str(path)], preexec_fn=drop,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout)


def run_scenario(script: Path, workdir: Path, *options: str) -> dict:
    """Run an in-process file system scenario (a script serving `workdir`/mnt with
    mount's Python API) in its own process; its JSON result. The mount is detached
    whatever happens."""
    (workdir / "mnt").mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(workdir), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(workdir / "mnt")], capture_output=True)
    assert proc.returncode == 0, err
    return json.loads(out)
