"""The group stop's seal: a checkpoint holds the file writes the kernel still caches.

The stop syncfs()es the mount only when a file of it can be written or was opened for
writing since the last syncfs (mount.FileSystem.syncfs_needed), and does it beside the
capture of the processes (slsfs.group_checkpoint.Seal). The target
(targets/seal_counter.c) keeps a counter in memory and in a file of the mount without an
fd kept open: through a shared writable mapping (the kernel holds the dirty page, only the
mapping holds the file open), or opening and closing the file at each step. After each
crash and restore, memory and file must agree (else the target writes counter.bad), and
the counter must not go back past the checkpoint taken before the crash.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time

import pytest

from group_helpers import TARGETS, wait_for
from test_group_atomicity import check_no_mismatch


ROUNDS = 4


def read_counter(path) -> int | None:
    """The counter at the start of the file (the mapped file is a page long, zeros after it)."""
    try:
        text = path.read_bytes()[:20].decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["mmap", "reopen"])
def test_counter_written_without_an_open_fd_comes_back_with_memory(group_store, group_binaries, mode):
    store, rng = group_store, random.Random(mode)
    store.sls("run", "--store", str(store.path), "--name", "seal", "--hz", "50", "--",
              str(group_binaries / "seal_counter"), "counter", mode)
    counter = store.mnt / "counter"
    wait_for(lambda: (read_counter(counter) or 0) > 10, "the target to start counting")
    for round_ in range(ROUNDS):
        floor = wait_for(lambda: read_counter(counter), "a readable counter")
        store.checkpoint("seal")                # durable, taken after `floor` was read
        time.sleep(rng.uniform(0, 0.2))
        store.crash()
        store.sls("restore", "seal", "--store", str(store.path))
        restored = wait_for(lambda: read_counter(counter), "the restored counter")
        assert restored >= floor, f"{mode} round {round_}: counter went back from {floor} to {restored}"
        wait_for(lambda: (read_counter(counter) or 0) > restored or (store.mnt / "counter.bad").exists(),
                 f"the restored target to count on ({mode}, round {round_})")
        check_no_mismatch(store)
    store.sls("stop", "--store", str(store.path))


def _files_commits(store) -> list[dict]:
    log = json.loads(store.sls("log", str(store.mnt), "--limit", "0", "--json").stdout)["checkpoints"]
    return [c for c in log if c["label"].endswith(": files")]


def test_a_group_that_writes_no_file_names_the_file_system_it_has_instead_of_committing_it_again(group_store):
    """The history holds one entry per checkpoint of a group that writes no file, not two
    (its files commit is the newest commit, whose tree is the file system as it is); a file
    written by then is in the next checkpoint's tree all the same."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "idle", "--hz", "20", "--", "sleep", "600")
    wait_for(lambda: store.group("idle")["checkpoints"] >= 8, "eight checkpoints")
    before = len(_files_commits(store))      # the first's, if the group's start changed a file
    assert before <= 1, "each checkpoint committed the unchanged file system again"
    (store.mnt / "written").write_text("by then")
    _three_more_checkpoints(store)
    latest = store.group("idle")["last_durable"]
    assert (store.mnt / ".sls" / "checkpoints" / str(latest) / "fs" / "written").read_text() == "by then"
    written = len(_files_commits(store))
    assert written > before, "the write was not committed"
    _three_more_checkpoints(store)
    assert len(_files_commits(store)) == written, "the unchanged file system was committed again"
    store.sls("stop", "--store", str(store.path))


def _three_more_checkpoints(store) -> None:
    taken = store.group("idle")["checkpoints"]
    wait_for(lambda: store.group("idle")["checkpoints"] >= taken + 3, "three more checkpoints")


def test_the_files_commit_after_the_thaw_holds_no_request_the_thawed_processes_made(group_store):
    """A stop thaws the group once the kernel's writes are in the daemon, and commits the
    files after the thaw (slsfs.group_checkpoint.Sealing): the trio thread answers no
    request in between, so the commit holds the files of the frozen instant. The target
    (targets/rename_counter.py) counts in a file held in the writeback cache, then renames
    at.<i-1> to at.<i>: in every files commit the name must be the count or one behind it. A
    rename the thawed target made before the commit would show as a name ahead of the count
    (its pwrite stays in the kernel's cache until the next stop's syncfs)."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "order", "--hz", "100", "--",
              sys.executable, str(TARGETS / "rename_counter.py"))
    wait_for(lambda: store.group("order")["checkpoints"] >= 200, "200 checkpoints")
    checked = 0
    for commit in _files_commits(store):
        fs = store.mnt / ".sls" / "checkpoints" / str(commit["id"]) / "fs"
        try:
            count = int((fs / "count").read_bytes() or b"0")
            names = [name for name in os.listdir(fs) if name.startswith("at.")]
        except FileNotFoundError:          # thinned by retention since it was listed, or taken before `count`
            continue
        assert len(names) == 1, f"files commit {commit['id']}: {names}"
        at = int(names[0][3:])
        assert count - 1 <= at <= count, (f"files commit {commit['id']} holds at.{at} with count {count}: "
                                          "a rename made after the thaw")
        checked += 1
    assert checked >= 40, f"only {checked} files commits to check"   # (retention keeps the newest 100 commits)
    store.sls("stop", "--store", str(store.path))
