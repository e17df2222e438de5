"""A mount goes on answering while its store is collected: the collection runs in short
steps, requests between them (it once stopped the world: every request waited seconds).

The store holds a bulk of live chunks (a named root outside the file system), so that
marking them takes long; a thread looks names up in the mount the whole time (each a
LOOKUP the daemon must answer); some of those lookups must have been answered in the
middle of the collection, not all at its end."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from mount.control import request
from mount_helpers import run_scenario

BULK_CHUNKS = 150_000
REFS_PER_ENTRY = 250
SCENARIO_HELD = Path(__file__).with_name("gc_held_scenario.py")


def add_bulk(store_path) -> None:
    """A tree of BULK_CHUNKS small distinct chunks, named by a root of the working state."""
    from objectstore import Store
    with Store.open(store_path) as store:
        tree = store.tree()
        for entry in range(BULK_CHUNKS // REFS_PER_ENTRY):
            first = entry * REFS_PER_ENTRY
            ids = store.put_many([b"bulk chunk %d" % n for n in range(first, first + REFS_PER_ENTRY)])
            tree.put(entry.to_bytes(4, "big"), b"", ids)
        store.set_root("bulk", tree.flush())
        store.commit("bulk", durable=True)


def test_lookups_are_answered_while_a_collection_runs(mnt):
    for n in range(4):                      # a little history to forget and compact
        (mnt.path / "churn").write_bytes(os.urandom(1 << 20))
        request(mnt.store, "checkpoint")
    mnt.umount()
    add_bulk(mnt.store)
    mnt.mount()
    answered: list[float] = []
    stop = threading.Event()

    def look_up() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                os.stat(mnt.path / f"missing-{n}")     # a new name: the kernel must ask
            except FileNotFoundError:
                pass
            answered.append(time.monotonic())

    reader = threading.Thread(target=look_up)
    reader.start()
    try:
        started = time.monotonic()
        result = request(mnt.store, "gc", prune={"keep_last": 1})
        ended = time.monotonic()
    finally:
        stop.set()
        reader.join()
    assert result["live_chunks"] >= BULK_CHUNKS and result["commits_after"] == 1
    quarter = (ended - started) / 4
    middle = [t for t in answered if started + quarter < t < ended - quarter]
    assert len(middle) >= 5, (f"{len(middle)} lookups answered in the middle half of a "
                              f"{ended - started:.2f} s collection ({result})")
    assert (mnt.path / "churn").stat().st_size == 1 << 20
    mnt.umount()
    with mnt.open_store() as store:
        assert store.fsck() == []


def test_a_lookup_is_answered_while_a_compaction_is_held_in_the_middle(workdir):
    """The compaction's reads and lz4 run in a worker thread: held there (gc_held_scenario.py
    holds lz4 of a page being compacted), the daemon's trio thread goes on answering the
    mount's requests. (When they ran in the trio thread, a request waited for each 4 ms
    slice of them, and for the whole hold here.)"""
    results = run_scenario(SCENARIO_HELD, workdir)
    assert results["held"] and results["pages_intact"]
    assert results["collected"]["packs_compacted"] >= 1
    assert results["answer"] is not None, "the lookup was not answered while the compaction was held"
    assert "No such file" in results["answer"]
