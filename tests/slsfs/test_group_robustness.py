"""Groups that stress the freeze: a shell forking short-lived commands without pause.

Freezing a process tree can meet a child at the instant it exits (PTRACE_SEIZE of an
exiting task answers EPERM; a child seen running is a zombie by the time it is
attached, or its /proc entries vanish while it is read). Measured here: a third of
this shell's checkpoints fail that way at the first try. The daemon retries the
checkpoints it is asked for, so a group's first checkpoint and `sls checkpoint` succeed
however busy the tree is."""
from __future__ import annotations

from group_helpers import wait_for

FORKING_SHELL = "while :; do /bin/true; done"
CHECKPOINTS = 10


def test_fork_heavy_group_starts_and_checkpoints_every_time(group_store):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "forky", "--hz", "2", "--",
              "/bin/sh", "-c", FORKING_SHELL)
    ids = [store.checkpoint("forky") for _ in range(CHECKPOINTS)]
    assert ids == sorted(set(ids)), f"checkpoint ids are not increasing: {ids}"
    group = store.group("forky")
    assert group["running"] and group["checkpoints"] >= CHECKPOINTS + 1
    store.sls("stop", "--store", str(store.path))
    wait_for(lambda: not store.mnt.is_mount(), "the mount to go away")
