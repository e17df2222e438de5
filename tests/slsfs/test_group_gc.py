"""`sls gc` on the store of a running group goes through its daemon: old checkpoints are
thinned and their space given back while the group runs on, and every group record that
stays still finds its files commit (its `.sls/checkpoints/<id>/fs`, which clones start
from), through the daemon and on an unmounted store."""
from __future__ import annotations

import json

from objectstore import Store

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
    result = json.loads(store.sls("gc", str(store.path), "--json").stdout)
    # each checkpoint made two commits: over 240, of which the policy keeps the newest 100
    # (plus the files commits their records name)
    assert result["commits_after"] < 130 and result["bytes_freed"] >= 0
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
