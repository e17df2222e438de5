"""`sls gc --keep-last 1` on the store of a running group (through its daemon): unnamed
history goes, but the group's newest durable checkpoint (and the files commit it names)
and named checkpoints stay, and the group restores from it after a crash."""
from __future__ import annotations

import json

from group_helpers import wait_for


def test_prune_keeps_the_groups_newest_checkpoint_and_named_ones(group_store, group_binaries):
    store = group_store
    where = ("--store", str(store.path))
    store.sls("run", *where, "--name", "app", "--hz", "0", "--",
              str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: (store.mnt / "counter").exists(), "the group to count")
    warm = json.loads(store.sls("checkpoint", "app", *where, "--name", "warm", "--json").stdout)["checkpoint"]
    for _ in range(3):
        newest = json.loads(store.sls("checkpoint", "app", *where, "--json").stdout)["checkpoint"]
    before = [c["id"] for c in json.loads(store.sls("log", str(store.path), "-n", "0", "--json").stdout)["checkpoints"]]
    result = json.loads(store.sls("gc", str(store.path), "--keep-last", "1", "--json").stdout)
    after = [c["id"] for c in json.loads(store.sls("log", str(store.path), "-n", "0", "--json").stdout)["checkpoints"]]
    assert result["commits_after"] < result["commits_before"], result
    assert warm in after and newest in after, (before, after)
    assert len(after) < len(before) and max(after) > newest        # gc committed the files first
    assert [c for c in before if c not in after and c > warm], "unnamed group checkpoints dropped"
    store.crash()
    store.sls("restore", "app", *where)
    assert store.group("app")["restored_from"] in after     # the newest: it carries the record of `newest`
    counted = int((store.mnt / "counter").read_text().strip() or 0)
    wait_for(lambda: int((store.mnt / "counter").read_text().strip() or 0) > counted + 5,
             "the restored group to count on")
    store.sls("stop", *where)
    assert "clean" in store.sls("fsck", str(store.path)).stdout
