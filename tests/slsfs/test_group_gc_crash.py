"""A group daemon SIGKILLed in the middle of a collection (with its group's processes):
the store is clean (`sls fsck`), and the group comes back from a checkpoint that was
durable before the kill, its memory and its file from the same instant, and counts on.

The collection runs beside the group's checkpoints (objectstore.gc.Collection's steps);
the group's checkpoints made before it leave packs to compact (`--keep-last 1`). Each
kill falls at a random moment of a collection as long as one measured in the same run."""
from __future__ import annotations

import os
import random
import threading
import time

from mount.control import ControlError, request
from group_helpers import read_counter, wait_for

ROUNDS = 4


def test_a_daemon_killed_during_a_collection_leaves_a_clean_store(group_store, group_binaries):
    store = group_store
    rng = random.Random(int(os.environ.get("SLSFS_CRASH_SEED", time.time_ns() % 1_000_000)))
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "50", "--",
              str(group_binaries / "atomic_counter"), "counter")
    counter = store.mnt / "counter"
    wait_for(lambda: store.group("app")["checkpoints"] > 60, "checkpoints to collect")
    seconds = request(store.path, "gc", prune={"keep_last": 1})["seconds"]   # how long one takes
    killed_during = 0
    for round_ in range(ROUNDS):
        wait_for(lambda: store.group("app")["checkpoints"] > 30, "more checkpoints")
        floor = wait_for(lambda: read_counter(counter), "a readable counter")
        store.checkpoint("app")                     # durable, taken after `floor` was read
        replies: list[object] = []

        def collect() -> None:
            try:
                replies.append(request(store.path, "gc", prune={"keep_last": 1}))
            except ControlError as exc:             # the daemon died under it
                replies.append(exc)

        collector = threading.Thread(target=collect)
        collector.start()
        time.sleep(rng.uniform(0.0, seconds))
        done_before = bool(replies)
        store.crash()
        collector.join()
        killed_during += not done_before
        assert "clean" in store.sls("fsck", str(store.path)).stdout, f"round {round_}"
        store.sls("restore", "app", "--store", str(store.path))
        restored = wait_for(lambda: read_counter(counter), "the restored counter")
        assert restored >= floor, f"round {round_}: counter went back from {floor} to {restored}"
        wait_for(lambda: (read_counter(counter) or 0) > restored or (store.mnt / "counter.bad").exists(),
                 f"the restored target to count on (round {round_})")
        assert not (store.mnt / "counter.bad").exists(), (store.mnt / "counter.bad").read_text()
    print(f"collection {seconds} s, {killed_during} of {ROUNDS} kills during one")
    assert killed_during >= 1, f"no kill fell during a collection ({seconds} s each)"
    store.sls("stop", "--store", str(store.path))
    assert "clean" in store.sls("fsck", str(store.path)).stdout
