"""Run by test_gc_beside_requests.py in a child process: a mount served in-process (as the
group daemon serves its own) while a collection compacts a pack of pages stored as they
were, that compaction held in the middle (lz4 of a marked page waits until released);
meanwhile another process looks a new name up in the mount, which only the daemon can
answer. Prints JSON: whether that lookup was answered while the compaction was held.

A child process, because a process that serves a FUSE mount must never touch that mount
from the thread that serves it (embedded_scenario.py says more)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import lz4.block
import trio

from objectstore import Store

from mount import FileSystem
from scenario_end import finish_scenario, unmount_scenario

MARK = b"hold the collection at this page "
HOLD_S = 60.0       # the hold ends by itself after this (the test then fails, not hangs)
ANSWER_S = 10.0     # the lookup must be answered within this while the compaction is held


def marked_page(n: int) -> bytes:
    return (MARK + b"%08d " % n + b"heap " * 1000)[:4096]


def main(workdir: Path) -> None:
    store = Store.init(workdir / "store")
    mountpoint = workdir / "mnt"
    pages = [marked_page(n) for n in range(64)]
    ids = store.put_many(pages, compress_later=True)      # as a checkpoint stores its pages
    tree = store.tree()
    tree.put(b"pages", b"", ids)
    store.set_root("held", tree.flush())                  # kept: the compaction copies them
    store.commit("pages", durable=True)
    store.packs.seal_active()
    fs = FileSystem(store, "main", checkpoint_interval_ms=None)
    held, release = threading.Event(), threading.Event()
    results: dict = {}
    compress = lz4.block.compress

    def holding_compress(data, *args, **kwargs):
        if bytes(data[:len(MARK)]) == MARK and not held.is_set():
            held.set()
            release.wait(HOLD_S)
        return compress(data, *args, **kwargs)

    def look_up() -> None:
        try:
            if not held.wait(HOLD_S):
                return
            try:
                done = subprocess.run(["stat", str(mountpoint / "a-name-never-looked-up")], capture_output=True,
                                      text=True, timeout=ANSWER_S, env={**os.environ, "LC_ALL": "C"})
                results["answer"] = done.stderr.strip()
            except subprocess.TimeoutExpired:
                results["answer"] = None
        finally:
            release.set()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(fs.serve, str(mountpoint))
            watcher = threading.Thread(target=look_up)
            watcher.start()
            lz4.block.compress = holding_compress
            try:
                results["collected"] = await fs.collect()
            finally:
                lz4.block.compress = compress
                release.set()
                await trio.to_thread.run_sync(watcher.join)
            results["held"] = held.is_set()
            results["pages_intact"] = store.get_many(ids) == pages
            await unmount_scenario(mountpoint)

    finish_scenario(fs, store, run, results)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
