"""ImageWriter.add_pages (a run stored by one put_many, entered in the page table a block
at a time) keeps every page at its address, the later of two writes of one address
winning, across block boundaries and processes."""
from __future__ import annotations

import random
import struct

from checkpointer import load_image
from checkpointer.image import BLOCK, PAGES_PER_BLOCK, ImageWriter
from checkpointer.kernel import PAGE_SIZE
from objectstore.chunks import NODE
from objectstore.gc import reachable


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


def _page_table_leaves(store, root) -> int:
    """Leaf nodes of an image's tree (all but the metadata's hold page blocks)."""
    return sum(1 for cid in reachable(store, [root]) if store.kind(cid) == NODE and store.get(cid)[:1] == b"L")


def test_a_checkpoint_writing_every_block_rewrites_a_few_blocks_per_node_and_restores_exactly(store):
    """A process that writes all over its memory (Redis) changes most page blocks at each
    checkpoint: the image's tree holds several blocks in a leaf (IMAGE_LEAF_BYTES), so
    such a checkpoint writes a node per few blocks, not per block; every page comes back."""
    blocks = 48
    pages = [struct.pack("<QQ", n, 0) * (PAGE_SIZE // 16) for n in range(blocks * PAGES_PER_BLOCK)]
    writer = ImageWriter(store)
    writer.add_pages(1, 0x400000, b"".join(pages))
    root = writer.finish([{"pid": 1}], [])
    assert _page_table_leaves(store, root) <= blocks // 3
    rng = random.Random(3)
    for _ in range(3):      # an incremental checkpoint: a page or two written in each block
        writer = ImageWriter(store, root)
        for block in range(blocks):
            for index in rng.sample(range(PAGES_PER_BLOCK), 2):
                n = block * PAGES_PER_BLOCK + index
                pages[n] = rng.randbytes(PAGE_SIZE)
                writer.add_pages(1, 0x400000 + n * PAGE_SIZE, pages[n])
        root = writer.finish([{"pid": 1}], [])
        assert _page_table_leaves(store, root) <= blocks // 3
    assert _pages(store, root, 1) == {0x400000 + n * PAGE_SIZE: page for n, page in enumerate(pages)}
