"""A process's dumpable flag (prctl PR_SET_DUMPABLE) comes back as it was: the restore
sets credentials, and the kernel resets the flag at every change of them (zdtm dumpable01,
and fd / file_locks03 / file_locks04, whose non-root processes could no longer read each
other's /proc/PID/fd after a restore)."""
from __future__ import annotations

import os

import pytest

import checkpointer

from ckpt_helpers import ok_lines, reads_after_a_restore, wait_for


@pytest.mark.parametrize("mode, owner", [("user", 65534), ("secret", 0)],
                         ids=["non-root-that-set-it", "root-that-cleared-it"])
def test_the_dumpable_flag_comes_back_as_it_was(procs, store, tmp_path, mode, owner):
    tmp_path.chmod(0o777)           # the "user" target looks for its read-now file as uid 65534
    out = tmp_path / "dumpable.out"
    proc = procs.python("dumpable.py", str(out), mode)
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == [f"ready dumpable={int(mode == 'user')}"],
             "the target to set its dumpable flag")
    checkpointer.checkpoint([proc.pid], store, "dumpable")
    procs.kill(proc)
    restored = reads_after_a_restore(procs, store, "dumpable", out)
    # what other tools see: /proc/PID belongs to the process's owner only while it is dumpable
    assert os.stat(f"/proc/{restored.pids[0]}").st_uid == owner
