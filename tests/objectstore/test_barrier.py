"""A barrier in halves (Store.begin_barrier / wait in another thread / end_barrier): the
owner goes on putting and committing during the fsync; the barrier covers exactly the
commits made before it began, and what came after stays to be made durable."""
from __future__ import annotations

import threading

from objectstore import Store


def test_a_barrier_covers_the_commits_before_it_and_not_those_during_it(store: Store, store_dir):
    store.put(b"before " * 100)
    before = store.commit("before", durable=False)
    pending = store.begin_barrier()
    waiter = threading.Thread(target=pending.wait)
    waiter.start()
    during_chunk = store.put(b"during " * 100)      # the owner's thread goes on meanwhile
    during = store.commit("during", durable=False)
    waiter.join()
    assert store.end_barrier(pending) == before.id
    assert store.durable_id == before.id < during.id
    assert store.packs.unsynced                     # "during" still waits for a barrier
    assert store.barrier() == during.id and not store.packs.unsynced
    store.close()
    with Store.open(store_dir) as again:
        assert [c.label for c in again.log()][:2] == ["during", "before"]
        assert again.get(during_chunk) == b"during " * 100


def test_a_barrier_with_nothing_new_is_immediate(store: Store):
    commit = store.commit("one")                    # durable already
    pending = store.begin_barrier()
    pending.wait()
    assert store.end_barrier(pending) == commit.id == store.durable_id


def test_a_plain_barrier_fsyncs_the_pack_and_leaves_no_descriptor(store: Store, monkeypatch):
    """Store.barrier() once skipped PendingBarrier.wait: no fsync (invisible to SIGKILL
    tests: the page cache survives a killed process, not a power cut) and one leaked
    descriptor per call. The pack is made durable with fdatasync (its data and size)."""
    import os
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    store.put(b"payload " * 100)
    commit = store.commit("not yet durable", durable=False)
    fds_before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    assert store.barrier() == commit.id == store.durable_id
    monkeypatch.undo()
    assert len(synced) == 1 and not store.packs.unsynced
    assert len(os.listdir("/proc/self/fd")) == fds_before
