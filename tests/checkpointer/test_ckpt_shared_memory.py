"""Shared anonymous memory under incremental checkpoints (shared_memory.py): each image
holds the memory exactly as it was at its instant, though a checkpoint reads again only
the pieces written since the last one; and the last image restores into processes that
find their shared and private memory from the same instant."""
from __future__ import annotations

import os
import resource

import checkpointer
from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental
from checkpointer.shared_memory import PIECE
from ckpt_helpers import children_of, goes_on_after_a_restore, ok_lines, wait_for

SIZE = 64 << 20   # shared_writers.py's mapping


def _shared_memory(pid: int) -> bytes:
    """The contents of the process's shared mapping of SIZE bytes, read now."""
    for name in os.listdir(f"/proc/{pid}/map_files"):
        start, end = (int(x, 16) for x in name.split("-"))
        if end - start == SIZE:
            with open(f"/proc/{pid}/map_files/{name}", "rb") as f:
                return f.read()
    raise AssertionError(f"no mapping of {SIZE} bytes in process {pid}")


def _more_lines(out, count: int) -> None:
    """Wait until the target has written `count` more "ok" lines."""
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= lines + count, f"{count} more lines")


def test_incremental_images_hold_shared_memory_as_it_was_reading_only_what_changed(
        procs, store, tmp_path, subreaper):
    out = tmp_path / "shared.out"
    # a short-lived child writes into the memory and exits every 250 steps of the parent's
    # (~1 s): a few of the checkpoints below have one between them and the last
    proc = procs.python("shared_writers.py", str(out), "250")
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 40, "40 lines")
    inc, reads, root = Incremental(), [], None
    try:
        for i in range(12):
            _more_lines(out, 15)
            with freeze([proc.pid], tree=True) as frozen:
                root = inc.capture(frozen, store)
                live = _shared_memory(proc.pid)     # still frozen: the image's instant
            reads.append(inc.shared.pieces_read)
            image = load_image(store, root)
            [record] = [f for f in image.files if f["kind"] == "memfd"]
            assert image.read_blob(record["data"]) == live, f"checkpoint {i}: the image's shared memory differs"
    finally:
        inc.close()
    print("pieces read per checkpoint", reads)
    assert reads[0] == SIZE // PIECE, reads
    assert min(reads[1:]) < SIZE // PIECE // 4, f"every checkpoint read the shared memory whole: {reads}"
    children = children_of(proc.pid)
    procs.kill(proc)
    subreaper(children)
    size = out.stat().st_size
    restored = checkpointer.restore(store, root)
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 3000 or "BAD" in out.read_text(),
             "the restored processes to count on")
    assert "BAD" not in out.read_text()


def test_a_fork_snapshot_does_not_make_the_next_checkpoint_read_shared_memory_whole(procs, store, tmp_path):
    """A process that rewrites 16 MiB of private memory between checkpoints has its pages
    copied through a fork snapshot (snapshot.py), a fork the kernel reports like any
    other: it must not count as a child that may have written the shared memory."""
    out = tmp_path / "shared.out"
    proc = procs.python("shared_and_private.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "10 lines")
    inc, reads = Incremental(), []
    try:
        for _ in range(5):
            _more_lines(out, 3)
            with freeze([proc.pid], tree=True) as frozen:
                pending = inc.capture_snapshot(frozen, store)
            pending.complete()
            reads.append(inc.shared.pieces_read)
    finally:
        inc.close()
    whole = (16 << 20) // PIECE
    assert reads[0] == whole, reads
    assert max(reads[2:]) < whole // 4, f"checkpoints after a fork snapshot read the shared memory whole: {reads}"


def test_thousands_of_shared_pieces_restore_under_a_low_fd_limit(procs, store, tmp_path):
    """1,500 separate pieces of shared anonymous memory come back (a memfd each) by a
    restorer whose soft RLIMIT_NOFILE is 1,024: it held one fd of its own per new memfd
    until the end of the restore (stress-ng --mlock: EMFILE in the daemon)."""
    out = tmp_path / "pieces.out"
    proc = procs.python("many_shared.py", str(out), "1500")
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, limit[1]))
    try:
        goes_on_after_a_restore(procs, store, proc, out, "pieces", "the target to fill its pieces")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)
