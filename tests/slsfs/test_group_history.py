"""`.sls/checkpoints/<id>/procs/<pid>/`: a group's processes as files, and a core that gdb reads."""
from __future__ import annotations

import json
import os
import stat
import shutil
import subprocess

import pytest

from group_helpers import wait_for

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb (make test installs it)")


def test_checkpoint_procs_files_and_gdb_backtrace(group_store, group_binaries, tmp_path):
    store = group_store
    program = group_binaries / "deep_sleeper"
    store.sls("run", "--store", str(store.path), "--name", "sleeper", "--hz", "2", "--", str(program))
    checkpoint = store.checkpoint("sleeper")
    procs = store.mnt / ".sls" / "checkpoints" / str(checkpoint) / "procs"
    assert wait_for(lambda: procs.is_dir() and os.listdir(procs), "procs/ of the checkpoint") == ["1"]
    proc = procs / "1"
    assert sorted(os.listdir(proc)) == ["core", "fds", "maps", "status.json"]

    status = json.loads((proc / "status.json").read_text())
    assert status["pid"] == 1 and status["exe"] == str(program) and status["cwd"] == str(store.mnt)
    assert status["group"]["name"] == "sleeper" and status["threads"][0]["regs"]["rip"] > 0
    assert str(program) in (proc / "maps").read_text()
    assert os.readlink(proc / "fds" / "0") == "/dev/null"
    # memory holds secrets: the process's files are its owner's alone
    for path, mode in ((proc, 0o500), (proc / "core", 0o400), (proc / "maps", 0o400),
                       (proc / "status.json", 0o400), (proc / "fds", 0o500)):
        st = os.stat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, os.getuid(), os.getgid()), path

    core = tmp_path / "core"
    core.write_bytes((proc / "core").read_bytes())
    result = subprocess.run(["gdb", "-batch", "-nx", "-ex", "bt", "-ex", "print steps", str(program), str(core)],
                            capture_output=True, text=True, timeout=120)
    assert "innermost_wait" in result.stdout and "middle_layer" in result.stdout and "main" in result.stdout, \
        result.stdout + result.stderr
    assert "$1 = " in result.stdout
    store.sls("stop", "--store", str(store.path))
