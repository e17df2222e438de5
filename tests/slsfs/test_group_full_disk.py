"""A full disk under a running group: its checkpoints fail with a clear error (shown by
`sls ps`) while the application runs on; once space is freed they succeed again, and a
crash after that restores from the newest durable checkpoint."""
from __future__ import annotations

import subprocess

import pytest

from group_helpers import GroupStore, wait_for
from tmpfs import tmpfs

COUNTING_SHELL = "i=0; while :; do i=$((i+1)); sleep 0.05; done"


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "40m") as disk:
        yield disk


def test_checkpoints_fail_while_full_and_resume_after(small_disk):
    store = GroupStore.__new__(GroupStore)           # a store on the small disk
    store.path, store.mnt = small_disk / "store", small_disk / "store.mnt"
    try:
        store.sls("init", str(store.path))
        store.sls("run", "--store", str(store.path), "--name", "s", "--hz", "10", "--",
                  "/bin/sh", "-c", COUNTING_SHELL)
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        refused = store.sls("checkpoint", "s", "--store", str(store.path), check=False)
        assert refused.returncode == 1 and "full" in refused.stderr, refused.stderr
        status = wait_for(lambda: (g := store.group("s"))["error"] and g, "ps to show the failure")
        assert "full" in status["error"] and status["running"]

        filler.unlink()
        store.sls("checkpoint", "s", "--store", str(store.path))
        wait_for(lambda: store.group("s")["error"] == "", "periodic checkpoints to succeed again")
        after = store.group("s")["last_durable"]
        store.crash()
        out = store.sls("restore", "s", "--store", str(store.path)).stdout
        restored_from = int(out.split("restored from checkpoint ")[1].split(",")[0])
        assert restored_from >= after
        assert store.group("s")["running"]
        store.sls("stop", "--store", str(store.path))
    finally:
        store.cleanup()
