"""ImageWriter.add_runs (every page of many runs stored by one put_many) builds the same
page table as add_pages one run at a time, on a fresh image and on a parent image; finish
drops the pages of processes that are gone and keeps the others' blocks as they were; a
writer on the image a previous writer made takes over the blocks it decoded and builds the
same page table as one that decodes them again; blocks whose pages were written again as
they were are not written again. A block's refs name each of its chunks once."""
from __future__ import annotations

import random

from checkpointer import image
from checkpointer.image import BLOCK, ImageWriter
from checkpointer.kernel import PAGE_SIZE
from objectstore.chunks import NODE

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


def _chain(store, seed: int, cold: bool) -> list[list]:
    """Six images, each on the last: runs, a cleared span, a process leaving and one coming;
    with `cold`, no writer finds its parent's decoded blocks. The page table of each."""
    rng = random.Random(seed)
    tables, parent = [], None
    pids = [3, 9]
    for step in range(6):
        if cold:
            image._decoded.clear()
        writer = ImageWriter(store, parent)
        if step == 3:
            pids = [3, 11]                          # 9 left, 11 came
        writer.add_runs(_runs(rng, tuple(pids), 25))
        start = 0x7f0000000000 + rng.randrange(0, 4 * BLOCK // PAGE_SIZE) * PAGE_SIZE
        writer.clear(3, start, start + rng.choice([1, 70]) * PAGE_SIZE)
        parent = writer.finish([{"pid": pid} for pid in pids], [])
        tables.append(_page_table(store, parent))
    return tables


def test_decoded_blocks_taken_over_from_the_parent_build_the_page_table_decoding_builds(store):
    for seed in range(3):
        assert _chain(store, seed, cold=False) == _chain(store, seed, cold=True)


def test_a_writer_that_never_finished_leaves_no_half_patched_block_to_the_next(store):
    rng = random.Random(5)
    parent, _ = _image(store, None, _runs(rng, (3,), 30), [{"pid": 3}], batched=True)
    later = _runs(rng, (3,), 20)
    abandoned = ImageWriter(store, parent)          # took the parent's decoded blocks over...
    abandoned.add_runs(_runs(rng, (3,), 40))        # ... patched them, then failed: no finish
    warm = _image(store, parent, later, [{"pid": 3}], batched=True)[0]
    image._decoded.clear()
    cold = _image(store, parent, later, [{"pid": 3}], batched=True)[0]
    assert _page_table(store, warm) == _page_table(store, cold)


def _nodes_written(store, monkeypatch, writer: ImageWriter, processes: list[dict]) -> tuple[bytes, int]:
    """writer.finish(processes, []) and the tree nodes it stored."""
    written = []
    put = store.put
    monkeypatch.setattr(store, "put", lambda data, *kind: written.append(kind) or put(data, *kind))
    root = writer.finish(processes, [])
    monkeypatch.setattr(store, "put", put)
    return root, sum(kind == (NODE,) for kind in written)


def test_pages_written_again_as_they_were_leave_their_blocks_unwritten(store, monkeypatch):
    """A checkpoint whose written pages hold what they held (a process writes the same
    bytes again; a write-tracked page counts as written) puts none of their blocks into
    the tree: it writes the nodes an image with no page written writes, and its page
    table is its parent's."""
    rng = random.Random(11)
    base = 0x7f0000000000
    # (blocks enough for several leaves: the last one's is not the metadata's, image.IMAGE_LEAF_BYTES)
    runs = [(3, base + n * 3 * BLOCK + PAGE_SIZE, rng.randbytes(3 * PAGE_SIZE)) for n in range(200)]
    parent, _ = _image(store, None, runs, [{"pid": 3}], batched=True)
    quiet, quiet_nodes = _nodes_written(store, monkeypatch, ImageWriter(store, parent), [{"pid": 3}])
    again = ImageWriter(store, parent)
    again.add_runs(runs[::2])
    again.clear(3, base, base + PAGE_SIZE)                  # a cleared span that held no page
    root, nodes = _nodes_written(store, monkeypatch, again, [{"pid": 3}])
    assert _page_table(store, root) == _page_table(store, parent)
    assert nodes == quiet_nodes
    changed = ImageWriter(store, parent)                    # (and a page that did change is written)
    changed.add_runs([(3, runs[-1][1], rng.randbytes(PAGE_SIZE))])     # (a leaf apart from the metadata's)
    assert _nodes_written(store, monkeypatch, changed, [{"pid": 3}])[1] > quiet_nodes


def test_a_block_names_each_of_its_chunks_once_in_its_refs():
    zero, other = bytes(16), b"\x01" * 16
    pages = {9: zero, 0: zero, 5: other, 63: zero}
    value, refs = image._encode_block(pages)
    assert image._decode_block(value, refs) == dict(sorted(pages.items()))
    assert sorted(refs) == [zero, other]
