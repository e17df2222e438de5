"""A pre-copy (Incremental.precopy) reads every tracked mapping's written pages of a process
in one copy, then hands each mapping its own runs: a run of pages that goes on from one
mapping into the next one (two adjacent mappings written at their border) is cut there."""
from __future__ import annotations

import subprocess

from checkpointer import freeze
from checkpointer.incremental import Incremental, _by_mapping
from checkpointer.kernel import PAGE_SIZE

A, B = ("a",), ("b",)      # mapping signatures (opaque to _by_mapping)


def test_runs_are_cut_at_the_end_of_each_mapping() -> None:
    pages = lambda first, count: bytes([first]) * PAGE_SIZE * count  # noqa: E731
    runs = [(0x1000, memoryview(pages(1, 3))), (0x5000, pages(2, 1))]
    split = _by_mapping(runs, [(A, 0x3000), (B, 0x6000)])
    assert {sig: [(addr, bytes(part)) for addr, part in parts] for sig, parts in split.items()} == {
        A: [(0x1000, pages(1, 2))],
        B: [(0x3000, pages(1, 1)), (0x5000, pages(2, 1))]}


def test_a_precopy_across_two_adjacent_mappings_gives_each_its_own_page(procs, store) -> None:
    proc = procs.python("border_writer.py", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    base = int(proc.stdout.readline())
    inc = Incremental()
    try:
        with freeze([proc.pid], tree=True) as frozen:
            inc.capture(frozen, store)            # full; tracks writes from here on
        proc.stdin.write("7\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "7"
        assert inc.precopy(min_pages=0) >= 2
        precopied = inc.trackers[proc.pid].precopied

        def kept(page: int) -> list[tuple[int, bytes]]:
            """The runs kept for the mapping holding `page`, within the target's 4 pages (the
            kernel may merge a mapping with an anonymous neighbour the interpreter writes too)."""
            sig = next(sig for sig in precopied if sig[0] <= page < sig[1])
            return [(addr, bytes(data)) for addr, data in precopied[sig] if base <= addr < base + 4 * PAGE_SIZE]
        assert kept(base + PAGE_SIZE) == [(base + PAGE_SIZE, bytes([7]) * PAGE_SIZE)]
        assert kept(base + 2 * PAGE_SIZE) == [(base + 2 * PAGE_SIZE, bytes([7]) * PAGE_SIZE)]
    finally:
        inc.close()
