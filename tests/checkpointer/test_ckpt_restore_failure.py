"""A restore that fails leaves nothing behind: every task it made is killed and, as the
restorer traced them all, waited for by it (checkpointer.tracees). Before, each stayed a
zombie, re-parented to PID 1 (which cannot reap a traced task), for as long as the
restoring process lived (a whole test session, a daemon's life), and PID 1 of the new PID
namespace with them."""
from __future__ import annotations

import os

import pytest

import checkpointer
from ckpt_helpers import ok_lines, wait_for


def _tasks_traced_by_us() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
                if fields.get("TracerPid") == str(os.getpid()):
                    found.append(f"{tid} ({fields['Name']}, {fields['State']}, parent {fields['PPid']})")
        except OSError:
            continue
    return found


@pytest.mark.parametrize("new_pid_namespace", [True, False], ids=["pidns", "no_pidns"])
def test_a_restore_that_fails_leaves_no_task_behind(procs, store, tmp_path, new_pid_namespace):
    out, path = tmp_path / "server.out", str(tmp_path / "server.sock")
    proc = procs.python("inet_server.py", str(out), path)
    wait_for(lambda: out.exists() and ok_lines(out), "the server to listen")
    checkpointer.checkpoint([proc.pid], store, "server", tree=True)
    procs.kill(proc)
    procs.restored.append(checkpointer.restore(store, "server"))
    with pytest.raises(checkpointer.CheckpointError, match="in use"):    # its addresses are taken
        procs.restored.append(checkpointer.restore(store, "server", new_pid_namespace=new_pid_namespace))
    assert _tasks_traced_by_us() == []
