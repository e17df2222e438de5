"""ImageWriter.add_runs (every page of many runs stored by one put_many) builds the same
page table as add_pages one run at a time, on a fresh image and on a parent image; finish
drops the pages of processes that are gone and keeps the others' blocks as they were."""
from __future__ import annotations

import random

from checkpointer.image import BLOCK, ImageWriter
from checkpointer.kernel import PAGE_SIZE

PAGE_TABLE = (b"pages/", b"pages0")


def _runs(rng: random.Random, pids: tuple[int, ...], count: int) -> list[tuple[int, int, bytes]]:
    runs = []
    for _ in range(count):
        first = rng.randrange(0, 4 * BLOCK // PAGE_SIZE) * PAGE_SIZE + 0x7f0000000000
        pages = rng.choice([1, 1, 1, 2, 3, 64, 65, 130])   # within a block, across one, across two
        runs.append((rng.choice(pids), first, rng.randbytes(pages * PAGE_SIZE)))
    return runs


def _page_table(store, root) -> list[tuple[bytes, bytes, tuple]]:
    return [(key, entry.value, entry.refs) for key, entry in store.tree(root).entries(*PAGE_TABLE)]


def _image(store, parent, runs, processes, batched: bool):
    writer = ImageWriter(store, parent)
    if batched:
        writer.add_runs(runs)
    else:
        for run in runs:
            writer.add_pages(*run)
    return writer.finish(processes, []), writer.pages


def test_add_runs_builds_the_page_table_add_pages_builds(store):
    processes = [{"pid": 3}, {"pid": 9}]
    for seed in range(4):
        rng = random.Random(seed)
        full, later = _runs(rng, (3, 9), 30), _runs(rng, (3, 9), 40)
        later.append(later[0])                      # an address written twice: the later run wins
        roots = {}
        for batched in (False, True):
            parent, pages = _image(store, None, full, processes, batched)
            assert pages == sum(len(d) for _, _, d in full) // PAGE_SIZE
            roots[batched] = _image(store, parent, later, processes, batched)[0]
        assert _page_table(store, roots[True]) == _page_table(store, roots[False])
        assert _page_table(store, roots[True])     # not two empty tables


def test_finish_drops_the_pages_of_processes_gone_and_keeps_the_rest(store):
    rng = random.Random(7)
    runs = _runs(rng, (2, 5, 8), 40)
    parent, _ = _image(store, None, runs, [{"pid": 2}, {"pid": 5}, {"pid": 8}], batched=True)
    before = _page_table(store, parent)
    # pid 5 exited (a zombie holds no memory), pid 8 is gone, pid 2 wrote nothing
    child, pages = _image(store, parent, [], [{"pid": 2}, {"pid": 5, "zombie": True}], batched=True)
    assert pages == 0
    pid_of = lambda key: int.from_bytes(key[len(b"pages/"):len(b"pages/") + 8], "big")  # noqa: E731
    assert {pid_of(k) for k, _, _ in before} == {2, 5, 8}
    assert _page_table(store, child) == [row for row in before if pid_of(row[0]) == 2]
