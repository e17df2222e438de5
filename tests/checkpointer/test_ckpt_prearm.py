"""Write tracking armed, and every page pre-copied, before a full capture's freeze
(Incremental.prearm), the target running: a page written between the arming and the
freeze is in the full image as of the freeze, a page written right after the thaw is in
the next, incremental, image, which stores only what was written, and a mapping replaced
by a new one at the same place before the freeze is stored whole, not from its pre-copy."""
from __future__ import annotations

import struct
import subprocess

from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental
from checkpointer.kernel import PAGE_SIZE

MIB = 32
PAGES = MIB * 256


def _first_words(store, root, pid: int, base: int) -> dict[int, int]:
    """Page number (in the target's mapping) -> the 8 bytes at its start, in an image."""
    words = {}
    for addr, data in load_image(store, root).page_runs(pid):
        for at in range(0, len(data), PAGE_SIZE):
            page = (addr + at - base) // PAGE_SIZE
            if 0 <= page < PAGES:
                words[page] = struct.unpack_from("Q", data, at)[0]
    return words


def _poker(procs):
    """The page_poker target: (process, its mapping's address, poke(command, value))."""
    proc = procs.python("page_poker.py", str(MIB), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    base = int(proc.stdout.readline(), 16)

    def poke(command, value: int) -> None:
        proc.stdin.write(f"{command} {value}\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
    return proc, base, poke


def test_writes_before_the_freeze_and_after_the_thaw_of_a_prearmed_capture_are_kept(procs, store):
    proc, base, poke = _poker(procs)
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
    expected = {page: page for page in range(PAGES)} | {1: 101, 2: 102}
    assert _first_words(store, full, proc.pid, base) == expected
    assert _first_words(store, incremental, proc.pid, base) == expected | {2: 202, 3: 203}
    assert stored < PAGES // 4, stored   # tracked: the mapping was not stored whole again


def test_a_mapping_replaced_after_the_prearming_is_stored_as_it_is_at_the_freeze(procs, store):
    proc, base, poke = _poker(procs)
    inc = Incremental()
    try:
        assert inc.prearm([proc.pid], min_bytes=0) == 1
        poke("remap", 5000)                  # same place, same signature: not write-protected
        with freeze([proc.pid], tree=True) as frozen:
            full = inc.capture(frozen, store)
        poke(7, 707)
        with freeze([proc.pid], tree=True) as frozen:
            incremental = inc.capture(frozen, store)
    finally:
        inc.close()
    expected = {page: page + 5000 for page in range(PAGES)}
    assert _first_words(store, full, proc.pid, base) == expected
    assert _first_words(store, incremental, proc.pid, base) == expected | {7: 707}
