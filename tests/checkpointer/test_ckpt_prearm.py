"""Write tracking armed before a full capture's freeze (Incremental.prearm), the target
running: a page written between the arming and the freeze is in the full image, and one
written right after the thaw is in the next, incremental, image, which stores only what
was written."""
from __future__ import annotations

import struct
import subprocess

from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental
from checkpointer.kernel import PAGE_SIZE

MIB = 32


def _first_words(store, root, pid: int, base: int) -> dict[int, int]:
    """Page number (in the target's mapping) -> the 8 bytes at its start, in an image."""
    words = {}
    for addr, data in load_image(store, root).page_runs(pid):
        for at in range(0, len(data), PAGE_SIZE):
            page = (addr + at - base) // PAGE_SIZE
            if 0 <= page < MIB * 256:
                words[page] = struct.unpack_from("Q", data, at)[0]
    return words


def test_writes_before_the_freeze_and_after_the_thaw_of_a_prearmed_capture_are_kept(procs, store):
    proc = procs.python("page_poker.py", str(MIB), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    base = int(proc.stdout.readline(), 16)

    def poke(page: int, value: int) -> None:
        proc.stdin.write(f"{page} {value}\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"

    inc = Incremental()
    try:
        assert inc.prearm([proc.pid], min_bytes=0) == 1
        poke(1, 101)                         # written after the arming, before the freeze
        poke(2, 102)
        with freeze([proc.pid], tree=True) as frozen:
            full = inc.capture(frozen, store)
        poke(2, 202)                         # right after the thaw
        poke(3, 203)
        with freeze([proc.pid], tree=True) as frozen:
            incremental = inc.capture(frozen, store)
        stored = inc.last_pages
    finally:
        inc.close()
    words = _first_words(store, full, proc.pid, base)
    assert len(words) == MIB * 256
    assert (words[0], words[1], words[2], words[3], words[4]) == (0, 101, 102, 3, 4)
    words = _first_words(store, incremental, proc.pid, base)
    assert len(words) == MIB * 256
    assert (words[0], words[1], words[2], words[3], words[4]) == (0, 101, 202, 203, 4)
    assert stored < MIB * 256 // 4, stored   # tracked: the mapping was not stored whole again
