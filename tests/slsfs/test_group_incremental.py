"""Incremental capture in the daemon: after a group's first (full) image, a checkpoint
copies only the pages written since the previous one, and a restore from such an image
brings back the whole memory; a group that writes many pages between checkpoints has
them pre-copied before the freeze."""
from __future__ import annotations

import sys

from group_helpers import TARGETS, wait_for


def ask(store, rid: str, text: str) -> str:
    tmp = store.mnt / f".req-{rid}"
    tmp.write_text(text)
    tmp.rename(store.mnt / "inbox" / rid)
    answer = store.mnt / "outbox" / rid
    return wait_for(lambda: answer.exists() and answer.read_text(), f"the reply to {rid}")


def test_checkpoints_after_the_first_copy_only_written_pages(group_store):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "inc", "--hz", "0", "--",
              sys.executable, str(TARGETS / "kv_service.py"))
    wait_for(lambda: (store.mnt / "inbox").is_dir(), "the service to start")
    for i in range(20):
        assert ask(store, f"{i:04}-set", f"set key{i} value{i}") == "ok"
        if i % 10 == 9:
            store.checkpoint("inc")                  # the second one is built on two parents
    store.crash()
    store.sls("restore", "inc", "--store", str(store.path))
    for i in range(20):
        assert ask(store, f"{i:04}-get", f"get key{i}") == f"value{i}", f"key{i} lost from memory"
    store.checkpoint("inc")                          # the first after a restore copies every page
    full = store.group("inc")["pages_last"]
    for i in range(20, 30):
        assert ask(store, f"{i:04}-set", f"set key{i} value{i}") == "ok"
    store.checkpoint("inc")
    written = store.group("inc")["pages_last"]
    assert 0 < written < full / 2, f"an incremental checkpoint copied {written} pages, a full one {full}"
    store.sls("stop", "--store", str(store.path))


SWEEPER = """
import sys, time
pages = bytearray(16 << 20)         # 4096 pages, every one written again within ~10 ms
count = 0
while True:
    count = (count + 1) & 0xFF
    for at in range(0, len(pages), 4096):
        pages[at] = count
    if all(pages[at] == count for at in range(0, len(pages), 4096 * 511)):
        open("sweeps", "w").write(str(count))
    else:
        open("BAD", "w").write(str(count))
"""


def test_a_group_writing_many_pages_is_pre_copied_and_restores_whole(group_store):
    """Above incremental.PRECOPY_MIN_PAGES written pages per checkpoint, the pages are
    copied before the freeze (`sls ps` precopied_pages_last); the images stay whole (the
    restored sweeper goes on finding its pages consistent)."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "sweep", "--hz", "5", "--",
              sys.executable, "-c", SWEEPER)
    wait_for(lambda: store.group("sweep")["precopied_pages_last"] > 0, "a checkpoint with a pre-copy")
    store.checkpoint("sweep")
    store.crash()
    store.sls("restore", "sweep", "--store", str(store.path))
    sweeps = store.mnt / "sweeps"
    before = sweeps.read_text()
    wait_for(lambda: sweeps.read_text() != before, "the restored sweeper to go on")
    assert not (store.mnt / "BAD").exists()
    store.sls("stop", "--store", str(store.path))


CHECKED_SWEEPER = """
import sys
pages = bytearray(96 << 20)         # above incremental.PREARM_MIN_BYTES: pre-armed
count = 0
while True:
    for at in range(0, len(pages), 4096):
        if pages[at] != count:       # each page holds the last sweep's number until rewritten
            open("BAD", "w").write(f"page {at // 4096}: {pages[at]}, not {count}")
            sys.exit(1)
        pages[at] = (count + 1) & 0xFF
    count = (count + 1) & 0xFF
    open("sweeps", "w").write(str(count))
"""


def test_a_large_group_is_pre_armed_before_a_full_checkpoint_and_restores_whole(group_store):
    """A group's first checkpoint after a restore (a full one) of a process with 96 MiB
    written all the time arms the tracking and pre-copies its memory before the freeze
    (before_freeze_prearm_stop among the stop's phases); the full image restores whole
    (the sweeper checks every page against the sweep before), and so do the incremental
    images built on it."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "big", "--hz", "0", "--",
              sys.executable, "-c", CHECKED_SWEEPER)
    sweeps = store.mnt / "sweeps"

    def crash_and_restore() -> None:
        store.crash()
        store.sls("restore", "big", "--store", str(store.path))
        before = sweeps.read_text()
        wait_for(lambda: sweeps.read_text() != before, "the restored sweeper to go on")
        assert not (store.mnt / "BAD").exists(), (store.mnt / "BAD").read_text()
    wait_for(lambda: sweeps.exists() and sweeps.read_text(), "the sweeper to sweep")
    store.checkpoint("big")         # (the group's first checkpoint was taken as it started)
    crash_and_restore()
    for checkpoints in (1, 3):      # the full checkpoint alone, then with incremental ones on it
        store.checkpoint("big")
        assert "before_freeze_prearm_stop" in store.group("big")["stop_phases_ms_last"]
        for _ in range(checkpoints - 1):
            store.checkpoint("big")
        crash_and_restore()
    store.sls("stop", "--store", str(store.path))
