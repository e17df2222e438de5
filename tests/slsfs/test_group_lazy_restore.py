"""Lazy restore of a persistence group: a group whose image is large runs again at once
while a page server fills its memory; it is checkpointed again after the restore (the
checkpoint waits until every page is in), killed, and restored again, its memory checked
throughout by the target itself (targets/checked_heap.py). If the page server dies, the
group is killed (never runs on zeros) and its checkpoint restores again."""
from __future__ import annotations

import os
import signal
import sys

from checkpointer.lazy import MARK_DIR
from group_helpers import TARGETS, wait_for

HEAP_MIB = 96  # well over the daemon's LAZY_MIN_BYTES
BIG_HEAP_MIB = 192  # pushed in seconds: the test kills its page server long before the end
ALL_IN = "every page of its lazy restore is in"


def _lines(store) -> list[str]:
    log = store.mnt / "heap.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def _assert_unbroken(store) -> int:
    lines = _lines(store)
    assert lines == [f"{n} ok" for n in range(len(lines))], \
        next(f"line {n}: {line!r}" for n, line in enumerate(lines) if line != f"{n} ok")
    return len(lines)


def _restore_and_run_on(store) -> int:
    """Restore after a crash; the target must write on for a full round of its heap."""
    store.sls("restore", "lazy", "--store", str(store.path))
    before = len(_lines(store))  # heap.log as of the checkpoint
    daemon_log = store.path / "daemon.log"
    wait_for(lambda: daemon_log.read_text().count(ALL_IN) > store.lazy_restores, "the page server to finish",
             timeout=120)
    store.lazy_restores += 1
    wait_for(lambda: len(_lines(store)) >= before + HEAP_MIB + 20 or "BAD" in (store.mnt / "heap.log").read_text(),
             "the restored target to check its whole heap", timeout=120)
    return _assert_unbroken(store)


def _run_checkpoint_crash(store, hz: int, heap_mib: int) -> None:
    """Run the self-checking heap target as group `lazy`, checkpoint it, crash everything."""
    store.lazy_restores = 0
    store.sls("run", "--store", str(store.path), "--name", "lazy", "--hz", str(hz), "--",
              sys.executable, str(TARGETS / "checked_heap.py"), str(heap_mib))
    wait_for(lambda: len(_lines(store)) >= 50, "the target to fill and check its heap", timeout=120)
    store.checkpoint("lazy")
    store.crash()


def test_a_large_group_restored_lazily_runs_on_with_its_memory(group_store):
    store = group_store
    _run_checkpoint_crash(store, hz=2, heap_mib=HEAP_MIB)
    _restore_and_run_on(store)
    # checkpointed again after the lazy restore (periodically, and now): then killed and
    # restored again from that checkpoint, with every page
    checkpoint = store.checkpoint("lazy")
    assert store.group("lazy")["last_durable"] >= checkpoint   # (a periodic one may have followed it)
    store.crash()
    _restore_and_run_on(store)
    store.sls("stop", "--store", str(store.path))


def test_a_group_whose_page_server_dies_is_killed_and_restores_again(group_store):
    store = group_store
    _run_checkpoint_crash(store, hz=0, heap_mib=BIG_HEAP_MIB)
    store.sls("restore", "lazy", "--store", str(store.path))
    pid = store.group("lazy")["pids"][0]
    mark = MARK_DIR / str(pid)   # held by the page server while it fills the group's memory
    server = int(mark.read_text())
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: not store.group("lazy")["running"], "the page guard to kill the group")
    _assert_unbroken(store)      # it never ran on zeros
    why = "its lazy restore could not serve its pages"    # `sls ps` says so, and so does the log
    wait_for(lambda: why in store.group("lazy")["ended_because"], "ps to tell why the group ended")
    daemon_log = store.path / "daemon.log"     # (not that its pages were all in)
    assert why in daemon_log.read_text() and ALL_IN not in daemon_log.read_text()
    wait_for(lambda: "group lazy has exited" in daemon_log.read_text(), "its end noted in its record")
    store.sls("stop", "--store", str(store.path))
    assert why in store.sls("ps", "--store", str(store.path)).stdout   # from its record: no daemon runs
    _restore_and_run_on(store)   # the checkpoint is intact
    store.sls("stop", "--store", str(store.path))
