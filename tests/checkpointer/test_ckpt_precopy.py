"""Pre-copy (Incremental.precopy): the pages written since the last checkpoint are copied
while the target runs, before the freeze; the stop copies only those written again since.
Whatever the target does between the pre-copy and the freeze (rewrite every page, or
only some, map and unmap regions), the image holds the memory of the freeze instant: each
self-checking target, restored from it, carries on unbroken."""
from __future__ import annotations

import subprocess
import sys
import time

import checkpointer
from checkpointer import freeze
from checkpointer.incremental import Incremental
from ckpt_helpers import BIG_HEAP, HEAP_CHECK_LINES, assert_unbroken, ok_lines, wait_for


def _lines(path, n: int) -> None:
    wait_for(lambda: path.exists() and len(ok_lines(path)) >= n, f"{n} lines from the target")


def _precopied_checkpoints(store, pid: int, out, rounds: int, between) -> tuple:
    """A full checkpoint, then `rounds` incremental ones, each after a pre-copy and then
    `between()`; (the last image, pages pre-copied per round, pages stored by the last)."""
    inc = Incremental()
    precopied = []
    try:
        with freeze([pid], tree=True) as frozen:
            inc.capture(frozen, store)
        for _ in range(rounds):
            _lines(out, len(ok_lines(out)) + 3)
            precopied.append(inc.precopy(min_pages=0))
            between()
            with freeze([pid], tree=True) as frozen:
                root = inc.capture(frozen, store)
    finally:
        inc.close()
    return root, precopied, inc.last_pages


def _restore_and_check(procs, store, proc, root, out, lines: int) -> None:
    """Kill the target, restore `root`: the restored target writes `lines` more lines, and
    every line of its output (it goes on writing) continues the unbroken sequence."""
    procs.kill(proc)
    before = len(ok_lines(out))
    restored = checkpointer.restore(store, root)
    procs.restored.append(restored)
    wait_for(lambda: len(ok_lines(out)) >= before + lines, "the restored target to carry on")
    assert assert_unbroken(out, proc.pid) >= before + lines


def test_pages_rewritten_after_their_precopy_are_stored_as_of_the_freeze(procs, store, binaries, tmp_path):
    """Every pre-copied page is rewritten (twice) before the freeze: each stale pre-copy
    must give way to the copy made in the stop (the rewriter finds any stale page: BAD),
    and is not stored at all."""
    out = tmp_path / "rewriter.out"
    proc = procs.start([str(binaries / "rewriter"), str(out), "16"])
    _lines(out, 3)

    def two_sweeps() -> None:
        _lines(out, len(ok_lines(out)) + 2)
    root, precopied, stored = _precopied_checkpoints(store, proc.pid, out, 3, two_sweeps)
    assert min(precopied) >= 16 * 256, precopied     # the whole heap was written each time
    assert 16 * 256 <= stored < 17 * 256, stored      # ... and again: stored once, from the stop
    _restore_and_check(procs, store, proc, root, out, lines=3)


def test_precopied_pages_not_written_again_are_stored(procs, store, binaries, tmp_path):
    """The counter writes a slice at a time: most pre-copied pages are not written again
    before the freeze, which comes at once; their pre-copies are what the image holds."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out), *BIG_HEAP])
    _lines(out, 5)
    root, precopied, _ = _precopied_checkpoints(store, proc.pid, out, 3, lambda: None)
    assert all(precopied), precopied
    _restore_and_check(procs, store, proc, root, out, lines=HEAP_CHECK_LINES)


def test_mappings_changed_after_the_precopy_are_stored_whole(procs, store, binaries, tmp_path):
    """The remapper maps and unmaps a region every 5 ms and grows its heap: the pre-copies
    of mappings gone or changed by the freeze must not reach the image."""
    out = tmp_path / "remapper.out"
    proc = procs.start([str(binaries / "remapper"), str(out)])
    _lines(out, 5)
    root, _, _ = _precopied_checkpoints(store, proc.pid, out, 4, lambda: time.sleep(0.03))
    _restore_and_check(procs, store, proc, root, out, lines=30)


FILLER = r"""
import ctypes, mmap, sys
PAGES = int(sys.argv[1])
memory = mmap.mmap(-1, PAGES * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
print(hex(ctypes.addressof(ctypes.c_char.from_buffer(memory))), flush=True)
for line in sys.stdin:                          # a letter: every page filled with it
    memory[:] = line.strip().encode() * len(memory)
    print("filled", flush=True)
"""


def test_a_precopy_never_overwrites_pages_of_an_image_not_stored_yet(procs, store, tmp_path):
    """Checkpoints overlap as the group daemon's do: the pre-copy for the next one runs
    before the pages of the last one are stored (they are still views of the pre-copy's
    memory, which is used again once let go: copybuffer.py). Each image must hold the
    pages of its own freeze instant, not those the next pre-copy read."""
    pages = 64
    proc = procs.start([sys.executable, "-c", FILLER, str(pages)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    address = int(proc.stdout.readline(), 16)

    def fill(letter: bytes) -> None:
        proc.stdin.write(letter + b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"filled\n"

    inc = Incremental()
    try:
        with freeze([proc.pid], tree=True) as frozen:
            inc.capture(frozen, store)
        waiting, images = None, []
        for letter in b"BCDEFG":
            fill(bytes([letter]))
            assert inc.precopy(min_pages=0) >= pages
            if waiting is not None:        # stored only now, after the next pre-copy
                images.append((waiting[0], waiting[1].complete()))
            with freeze([proc.pid], tree=True) as frozen:
                waiting = (letter, inc.capture_snapshot(frozen, store))
        images.append((waiting[0], waiting[1].complete()))
    finally:
        inc.close()
    for letter, root in images:
        held = {addr: page for start, run in checkpointer.load_image(store, root).page_vectors(proc.pid)
                for addr, page in zip(range(start, start + len(run) * 4096, 4096), run)}
        found = {bytes(held[address + i * 4096][:1]) for i in range(pages)}
        assert found == {bytes([letter])}, f"image of the {chr(letter)} instant holds {found}"
