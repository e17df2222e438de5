"""`sls gc` on the store of a running group goes through its daemon: old checkpoints are
thinned and their space given back while the group runs on, and every group record that
stays still finds its files commit (its `.sls/checkpoints/<id>/fs`, which clones start
from), through the daemon and on an unmounted store. The checkpoints' pages, stored as
they are (pending compression), are compressed by the collections that keep them, and
the oldest kept checkpoint restores from them. `ps` tells the collections apart."""
from __future__ import annotations

import json
import time

from mount.control import request
from objectstore import Store
from slsfs import groups

from group_helpers import wait_for


def counter(store) -> int:
    try:
        text = (store.mnt / "counter").read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def test_gc_while_a_group_runs(group_store, group_binaries):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "50", "--",
              str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: store.group("app")["checkpoints"] > 120, "more checkpoints than retention keeps")
    stat = json.loads(store.sls("stat", str(store.path), "--json").stdout)
    assert stat["pending_compression_bytes"] > 0     # the pages are stored as they are; gc compresses them
    result = json.loads(store.sls("gc", str(store.path), "--json").stdout)
    # each checkpoint made two commits: over 240, of which the policy keeps the newest 100
    # (plus the files commits their records name)
    assert result["commits_after"] < 130 and result["bytes_freed"] >= 0
    gc = store.ps()["gc"]        # what `ps` says of the daemon's collections (bench/groups.py's GC window)
    assert gc["collections"] >= 1 and gc["running_since"] is None
    assert gc["last"]["live_chunks"] > 0 and gc["last"]["seconds"] >= 0
    before = counter(store)
    wait_for(lambda: counter(store) > before + 20, "the group to count on after the collection")
    newest = store.group("app")["last_durable"]
    wait_for(lambda: (store.mnt / ".sls" / "checkpoints" / str(newest)).is_dir(), "the newest checkpoint")
    store.sls("stop", "--store", str(store.path))
    store.sls("gc", str(store.path))                  # unmounted: the CLI collects itself
    assert "clean" in store.sls("fsck", str(store.path)).stdout
    with Store.open(store.path, readonly=True) as opened:   # the oldest kept group checkpoint
        oldest = min(c.id for c in opened.log() if c.label.startswith("group app #")
                     and not c.label.endswith(": files"))
    out = store.sls("restore", "app", "--store", str(store.path), "--clone", "--at", str(oldest)).stdout
    clone = store.mnt / out.split()[0].rstrip(":")
    wait_for(lambda: (clone / "counter").exists(), "the clone of the oldest kept checkpoint")
    store.sls("stop", "--store", str(store.path))


def test_thinning_a_group_that_writes_no_file_keeps_each_kept_checkpoint_whole(group_store, group_binaries):
    """A group that writes no file between two checkpoints names, as its files commit, the
    files commit its previous checkpoint named (the file system has not changed): not that
    previous checkpoint's own commit. Before, it named the previous group checkpoint's
    commit, which retention then kept only as a files commit, without the files commit its
    own record named: `sls log` showed it as a group checkpoint that `restore --clone --at`
    could not use ("checkpoint N-1 does not exist"; test_gc_while_a_group_runs under load,
    where the counter did not run between two checkpoints)."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "quiet", "--hz", "50", "--",
              str(group_binaries / "deep_sleeper"))
    wait_for(lambda: store.group("quiet")["checkpoints"] > 120, "more checkpoints than retention keeps")
    store.sls("gc", str(store.path), "--json")
    store.sls("stop", "--store", str(store.path))
    assert "clean" in store.sls("fsck", str(store.path)).stdout
    with Store.open(store.path, readonly=True) as opened:
        kept = {c.id for c in opened.log()}
        records = [(c.id, groups.load(opened, "quiet", c.roots).files_commit) for c in opened.log()
                   if groups.is_group_checkpoint(c.label)]
    assert records and all(files in kept for _, files in records), records
    oldest = min(cid for cid, _ in records)
    out = store.sls("restore", "quiet", "--store", str(store.path), "--clone", "--at", str(oldest)).stdout
    assert out.split()[0].rstrip(":").startswith("quiet.clone")
    store.sls("stop", "--store", str(store.path))


def test_a_plain_mount_keeps_the_files_commit_a_stopped_groups_record_names(group_store, group_binaries):
    """`sls mount` of a store whose group has stopped thins old checkpoints by the store's
    policy, as any mount, but keeps the group's newest checkpoint and the files commit its
    record names: `sls restore --clone` still works after the plain mount's retention
    dropped the group's older checkpoints (before: the newest too, and its files commit:
    "checkpoint N does not exist"), and fsck is clean."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "50", "--",
              str(group_binaries / "deep_sleeper"))
    wait_for(lambda: store.group("app")["checkpoints"] > 3, "a few group checkpoints")
    store.sls("stop", "--store", str(store.path))
    with Store.open(store.path, readonly=True) as opened:
        older = {c.id for c in opened.log() if groups.is_group_checkpoint(c.label)} - {opened.head.id}
    store.sls("mount", str(store.path), str(store.mnt))
    try:
        def older_group_checkpoints_thinned() -> bool:
            (store.mnt / "note").write_text(str(time.monotonic()))      # a checkpoint of the mount
            return not older & {c["id"] for c in request(store.path, "log")["log"]}
        wait_for(older_group_checkpoints_thinned, "the mount's retention to thin the group's checkpoints", timeout=120)
    finally:
        store.sls("umount", str(store.mnt))
    assert "clean" in store.sls("fsck", str(store.path)).stdout
    out = store.sls("restore", "app", "--store", str(store.path), "--clone").stdout
    assert out.split()[0].rstrip(":").startswith("app.clone")
    store.sls("stop", "--store", str(store.path))
