"""Files gone from under a running process: its working directory removed, its
executable replaced by an upgrade or deleted. The checkpoint keeps the program's mapped
contents; the restored process runs the same code, with /proc/PID/exe on that copy and
a working directory that is removed again (as before the checkpoint)."""
from __future__ import annotations

import os
import shutil

import pytest

import checkpointer

from ckpt_helpers import assert_unbroken, ok_lines, wait_for

LINE = 20


@pytest.mark.parametrize("executable", ["replaced", "deleted"])
def test_a_process_whose_cwd_and_executable_are_gone_comes_back(procs, store, binaries, tmp_path, executable):
    program, workdir, out = tmp_path / "counter", tmp_path / "work", tmp_path / "counter.out"
    shutil.copy(binaries / "counter", program)
    workdir.mkdir()
    proc = procs.start([str(program), str(out)], cwd=workdir)
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "the counter to count")
    workdir.rmdir()
    program.unlink()
    if executable == "replaced":   # an upgrade: another program at the same path
        shutil.copy("/bin/true", program)
    checkpointer.checkpoint([proc.pid], store, "gone", tree=True)
    procs.kill(proc)
    size = out.stat().st_size
    restored = checkpointer.restore(store, "gone")
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 100 * LINE, "the restored counter to count")
    assert assert_unbroken(out, proc.pid) > size // LINE + 90
    [pid] = restored.pids
    assert os.readlink(f"/proc/{pid}/exe").endswith("counter (deleted)")
    assert os.readlink(f"/proc/{pid}/cwd").endswith(" (deleted)")
    assert sorted(os.listdir(tmp_path)) == sorted(["counter.out", "store"] + ["counter"] * (executable == "replaced"))
