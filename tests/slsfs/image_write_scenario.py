"""Run by test_group_image_write.py in a child process: a mount served by FileSystem in a
trio loop, and in the same loop a group checkpoint's image write (Captured.write, as the
group daemon awaits it), whose finish is made slow: each page block's encoding takes
SLOW_BLOCK_S, for BLOCKS blocks. Prints what it saw as JSON.

Protocol with the test (lines): the scenario prints "writing" when the finish begins, then
waits until the kernel holds a request of its mount (the test's stat); the test writes
"answered" to its stdin once that stat has returned. The scenario notes whether that line
came while the image was still being written.
A child process: a process that serves a FUSE mount must never touch it from the thread
that serves it.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import trio

from objectstore import Store

from checkpointer import image
from checkpointer.image import BLOCK, ImageWriter, StoredImage
from checkpointer.kernel import PAGE_SIZE
from checkpointer.treecapture import TreeCapture
from mount import FileSystem, fusectl
from mount.filesystem import mount_device
from slsfs.group_checkpoint import Captured, PageTracking

BLOCKS = 2000
SLOW_BLOCK_S = 0.002
PID = 4242


class SlowFinish:
    """image._encode_block, slowed down and watching the test's lines."""

    def __init__(self, connection: int) -> None:
        self.connection = connection
        self.encode = image._encode_block
        self.calls = 0
        self.answered_at_block: int | None = None

    def __call__(self, pages: dict) -> tuple:
        self.calls += 1
        if self.calls == 1:
            print("writing", flush=True)
            deadline = time.monotonic() + 60
            while not fusectl.waiting(self.connection) and time.monotonic() < deadline:
                time.sleep(0.001)
        elif self.answered_at_block is None:
            if select.select([sys.stdin], [], [], SLOW_BLOCK_S)[0] and sys.stdin.readline() == "answered\n":
                self.answered_at_block = self.calls
        return self.encode(pages)


def slow_capture(store: Store, mountpoint: Path) -> tuple[SlowFinish, Captured, list]:
    """In the trio thread serving `mountpoint`: a capture of BLOCKS pages, one per page
    block, whose write will use SlowFinish as the block encoder; and its pages."""
    slow = SlowFinish(int(mount_device(str(mountpoint)).split(":")[1]))
    image._encode_block = slow
    writer = ImageWriter(store)
    pages = [(PID, n * BLOCK, bytes([n % 251]) * PAGE_SIZE) for n in range(BLOCKS)]
    captured = Captured(0, store.empty_root(), writer, [{"pid": PID}], [], TreeCapture(PageTracking(), writer),
                        list(pages), 0.0, {})
    return slow, captured, pages


def main(workdir: Path) -> dict:
    mountpoint = workdir / "mnt"
    with Store.init(workdir / "store") as store:
        fs = FileSystem(store, "main", checkpoint_interval_ms=None)
        results: dict = {}

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(fs.serve, str(mountpoint))
                slow, captured, pages = slow_capture(store, mountpoint)
                root = await captured.write()
                results.update(answered_at_block=slow.answered_at_block, blocks=slow.calls)
                read_back = StoredImage(store, root).page_runs(PID)
                results["pages_read_back"] = list(read_back) == [(a, d) for _, a, d in pages]
                await trio.to_thread.run_sync(subprocess.run, ["fusermount3", "-u", str(mountpoint)])

        trio.run(run)
        fs.close()
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))), flush=True)
