"""A persistence group's SysV semaphores, message queues and shared memory are its own (an
IPC namespace of its own): nothing of them is left on the host when everything is
SIGKILLed (as after a reboot), and `sls restore` brings them back as the group's memory
knows them, checkpointed many times a second with messages in flight: the program (the
checkpointer's sysv_state target) compares the semaphores' values, the queued messages
(types, sizes, bytes, order) and a segment nobody maps with its memory at every step, and
its child blocked in semop waits again after the restore and is woken; the restored group's
namespace is checkpointed, crashed and restored in its turn."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from group_helpers import wait_for

TARGET = Path(__file__).parents[1] / "checkpointer" / "targets" / "sysv_state.c"
STEP = re.compile(r"step (\d+) \d+ \d+ \d+")


def _host_keys() -> set[int]:
    keys = set()
    for kind in ("sem", "msg", "shm"):
        with open(f"/proc/sysvipc/{kind}") as f:
            next(f)
            keys |= {int(line.split()[0]) for line in f}
    return keys


def test_a_groups_sysv_objects_come_back_with_its_memory_after_a_crash(group_store, tmp_path):
    program = tmp_path / "sysv_state"
    subprocess.run(["gcc", "-O1", "-Wall", "-o", str(program), str(TARGET)], check=True)
    store = group_store
    out, wake = store.mnt / "ipc.out", tmp_path / "wake"
    key = 0x52500000 + os.getpid() % 0xFFFF * 4

    def lines() -> list[str]:
        return out.read_text(errors="replace").splitlines() if out.exists() else []

    def last_step() -> int:
        return max((int(m[1]) for line in lines() if (m := STEP.fullmatch(line))), default=0)

    def bad() -> list[str]:
        return [line for line in lines() if line.startswith("BAD")]

    store.sls("run", "--store", str(store.path), "--name", "ipc", "--hz", "20", "--",
              str(program), str(out), hex(key), str(wake))
    wait_for(lambda: last_step() >= 200, "the group to work its semaphores and queue")
    assert not {key, key + 1, key + 2} & _host_keys(), "the group's objects are in the host's namespace"
    store.checkpoint("ipc")
    wait_for(lambda: last_step() >= 400, "the group to go on past the checkpoint")
    store.crash()
    assert not {key, key + 1, key + 2} & _host_keys(), "a crash left the group's objects on the host"

    store.sls("restore", "ipc", "--store", str(store.path))
    restarted = last_step()
    wait_for(lambda: bad() or last_step() >= restarted + 200, "the restored group to go on")
    assert not bad(), bad()
    wake.touch()
    wait_for(lambda: bad() or "woken 7" in lines(), "its child blocked in semop to be woken")
    assert not bad(), bad()

    # the restored namespace is checkpointed in its turn: a second crash and restore
    store.checkpoint("ipc")
    at_checkpoint = last_step()
    wait_for(lambda: last_step() >= at_checkpoint + 200, "the group to go on past its second checkpoint")
    store.crash()
    store.sls("restore", "ipc", "--store", str(store.path))
    restarted = last_step()
    wait_for(lambda: bad() or last_step() >= restarted + 200, "the group restored again to go on")
    assert not bad(), bad()
    store.sls("stop", "--store", str(store.path))
