"""ImageWriter.add_pages (a run stored by one put_many, entered in the page table a block
at a time) keeps every page at its address, the later of two writes of one address
winning, across block boundaries and processes."""
from __future__ import annotations

import random

from checkpointer import load_image
from checkpointer.image import BLOCK, ImageWriter
from checkpointer.kernel import PAGE_SIZE


def _random_runs(rng: random.Random) -> list[tuple[int, int, bytes]]:
    runs = []
    for _ in range(60):
        pid = rng.choice([1, 7])
        first = rng.randrange(0, 3 * BLOCK // PAGE_SIZE) * PAGE_SIZE + 0x400000
        count = rng.choice([1, 1, 1, 2, 5, 70])         # most runs of a checkpoint are one page
        data = b"".join(bytes([rng.randrange(256)]) * 64 + rng.randbytes(PAGE_SIZE - 64)
                        for _ in range(count))
        runs.append((pid, first, data))
    return runs


def _pages(store, root, pid: int) -> dict[int, bytes]:
    found = {}
    for start, pages in load_image(store, root).page_vectors(pid):
        for i, page in enumerate(pages):
            found[start + i * PAGE_SIZE] = bytes(page)
    return found


def test_pages_of_random_runs_come_back_at_their_addresses(store):
    processes = [{"pid": 1}, {"pid": 7}]
    for seed in range(5):
        runs = _random_runs(random.Random(seed))
        expected: dict[tuple[int, int], bytes] = {}
        for pid, addr, data in runs:
            for offset in range(0, len(data), PAGE_SIZE):
                expected[(pid, addr + offset)] = data[offset:offset + PAGE_SIZE]
        writer = ImageWriter(store)
        for run in runs:
            writer.add_pages(*run)
        assert writer.pages == sum(len(d) // PAGE_SIZE for _, _, d in runs)
        root = writer.finish(processes, [])
        for pid in (1, 7):
            assert _pages(store, root, pid) == {addr: page for (p, addr), page in expected.items() if p == pid}
