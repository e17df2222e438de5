"""Group commit (slsfs.group_commit) on a real store: a commit is reported durable only
by a barrier that began after it was made (one made while a barrier runs waits for the
next), the commits made meanwhile share ONE next barrier, and a failed barrier reports
none of the commits it covered as durable; and in a daemon, crashes of a 100 Hz group."""
from __future__ import annotations

import os
import random
import time

import trio
import trio.testing

from objectstore import Store, StoreError
from mount.control import request
from mount.sync_thread import SYNC_THREAD
from slsfs.group_commit import GroupCommit

from group_helpers import read_counter, wait_for


class GatedBarrier:
    """The store's barrier as the daemon runs it (begin, the fdatasync in the worker
    thread, end), which holds its first call after the writing half until `gate` is set:
    the moment a checkpoint commits while the previous one's fdatasync runs."""

    def __init__(self, store: Store) -> None:
        self.store, self.gate, self.begun = store, trio.Event(), trio.Event()
        self.covered: list[int] = []        # the newest commit each barrier covered, in order
        self.fail_next = False

    async def __call__(self) -> int:
        pending = self.store.begin_barrier()
        self.covered.append(pending.commit_id)
        self.begun.set()
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise StoreError("syncing the store's pack file: Input/output error")
        await SYNC_THREAD.run(pending.wait)
        return self.store.end_barrier(pending)


def _commit(store: Store, n: int) -> int:
    store.put(f"image {n}".encode() * 100)
    return store.commit(f"group app #{n}", durable=False).id


def test_a_commit_made_during_a_barrier_waits_for_the_next_which_covers_all_made_meanwhile(tmp_path):
    store = Store.init(tmp_path / "s")
    barrier = GatedBarrier(store)
    commits = GroupCommit(store, barrier)
    returned: dict[int, int] = {}
    durable_then: dict[int, int] = {}

    async def wait_for(commit: int) -> None:
        returned[commit] = await commits.durable(commit)
        durable_then[commit] = store.durable_id

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            first = _commit(store, 1)
            nursery.start_soon(wait_for, first)
            await barrier.begun.wait()                 # its fdatasync "runs" (held at the gate)
            later = [_commit(store, n) for n in (2, 3, 4)]
            for commit in later:
                nursery.start_soon(wait_for, commit)
            await trio.testing.wait_all_tasks_blocked()
            assert returned == {}                      # nothing is durable before its barrier ends
            barrier.gate.set()
        assert barrier.covered == [first, later[-1]]   # two barriers: the second covers all three
        assert commits.barriers == 2
        for commit in (first, *later):
            assert returned[commit] >= commit and durable_then[commit] >= commit, (commit, returned)

    try:
        trio.run(main)
    finally:
        store.close()
    reopened = Store.open(tmp_path / "s")
    try:
        assert reopened.head.label == "group app #4" and reopened.durable_id == reopened.head.id
    finally:
        reopened.close()


def test_a_failed_barrier_reports_none_of_its_commits_durable_and_the_next_one_retries(tmp_path):
    store = Store.init(tmp_path / "s")
    barrier = GatedBarrier(store)
    commits = GroupCommit(store, barrier)
    failures: list[str] = []
    before = store.durable_id

    async def wait_for(commit: int) -> None:
        try:
            await commits.durable(commit)
        except StoreError as exc:
            failures.append(str(exc))

    async def main() -> None:
        barrier.fail_next = True
        async with trio.open_nursery() as nursery:
            first = _commit(store, 1)
            nursery.start_soon(wait_for, first)
            await barrier.begun.wait()
            nursery.start_soon(wait_for, first)        # a second waiter covered by the same barrier
            await trio.testing.wait_all_tasks_blocked()
            barrier.gate.set()
        assert len(failures) == 2 and "Input/output error" in failures[0]
        assert store.durable_id == before              # nothing claimed durable
        assert await commits.durable(first) >= first   # the next barrier makes it durable
        assert barrier.covered == [first, first]

    try:
        trio.run(main)
    finally:
        store.close()


def test_checkpoints_ahead_of_the_disk_wait_for_it_beyond_a_bound(tmp_path):
    """`within(n)`: with more than n commits not yet durable, a barrier runs before the
    caller goes on; within the bound, none."""
    store = Store.init(tmp_path / "s")
    barrier = GatedBarrier(store)
    barrier.gate.set()
    commits = GroupCommit(store, barrier)

    async def main() -> None:
        made = [_commit(store, n) for n in range(1, 4)]
        await commits.within(4)
        assert commits.barriers == 0 and store.durable_id < made[0]
        made += [_commit(store, n) for n in range(4, 8)]
        await commits.within(4)
        assert commits.barriers == 1 and store.head.id - store.durable_id <= 4

    try:
        trio.run(main)
    finally:
        store.close()


def test_at_100_hz_what_barrier_called_durable_is_restored_after_a_crash_and_the_store_is_whole(
        group_store, group_binaries):
    """A group checkpointed 100 times a second (its periodic checkpoints made durable in the
    background, several by one fdatasync) and SIGKILLed with its daemon at random moments:
    each restore comes from the checkpoint `sls barrier` called durable or a newer one, the
    memory and the file of the target agree, and fsck finds every record's image and files."""
    store = group_store
    rng = random.Random(int(os.environ.get("SLSFS_ATOMICITY_SEED", time.time_ns() % 1_000_000)))
    store.sls("run", "--store", str(store.path), "--name", "fast", "--hz", "100", "--",
              str(group_binaries / "atomic_counter"), "counter")
    counter = store.mnt / "counter"
    wait_for(lambda: (read_counter(counter) or 0) > 10, "the target to start counting")
    for round_ in range(3):
        time.sleep(rng.uniform(0.1, 0.4))
        barrier = request(store.path, "barrier", group="fast")
        assert barrier["durable"] >= barrier["checkpoint"], barrier
        time.sleep(rng.uniform(0, 0.05))         # more periodic checkpoints under way at the kill
        store.crash()
        assert "clean" in store.sls("fsck", str(store.path)).stdout
        out = store.sls("restore", "fast", "--store", str(store.path)).stdout
        restored_from = int(out.split("restored from checkpoint ")[1].split(",")[0])
        assert restored_from >= barrier["checkpoint"], (round_, restored_from, barrier)
        restored = wait_for(lambda: read_counter(counter), "the restored counter")
        wait_for(lambda: (read_counter(counter) or 0) > restored or (store.mnt / "counter.bad").exists(),
                 f"the restored target to count on (round {round_})")
        assert not (store.mnt / "counter.bad").exists(), (store.mnt / "counter.bad").read_text()
    store.sls("stop", "--store", str(store.path))
