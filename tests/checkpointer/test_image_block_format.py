"""The page blocks of a process image (docs/FORMAT.md, "Process images", version 28): each
chunk id is stored once, in the refs; the value is the bitmap, plus a place in the refs per
page only when a chunk repeats in the block. Images written before (versions 1-27: the ids
again in the value) still restore, eagerly and lazily, and an incremental image over one
reads right, keeping its unchanged old blocks as they are. A block that is neither is
refused with an error that says what to do."""
from __future__ import annotations

import json
import os
import struct

import pytest

import checkpointer
from checkpointer import image, load_image
from checkpointer.errors import CheckpointError
from checkpointer.image import PAGES_PER_BLOCK, ImageWriter, StoredImage, block_ids
from checkpointer.kernel import PAGE_SIZE
from ckpt_helpers import assert_unbroken, ns_pid

from test_ckpt_restore import run_until, wait_past

PAGE_TABLE = (b"pages/", b"pages0")


def _as_version_27(store, root: bytes) -> bytes:
    """The image `root` rewritten as the version-27 writer wrote it: every block's chunk ids
    in its value after the bitmap (its refs as they are), the metadata's version 27."""
    tree = store.tree(root)
    for key, entry in list(tree.entries(*PAGE_TABLE)):
        tree.put(key, entry.value[:8] + b"".join(block_ids(*entry)), refs=entry.refs)
    meta = json.loads(tree.get(b"meta"))
    meta["version"] = 27
    tree.put(b"meta", json.dumps(meta).encode(), refs=tree.get_entry(b"meta").refs)
    return tree.flush()


def _in_version_27(item) -> bool:
    """Is this page block (key, entry) encoded as version 27 wrote blocks?"""
    value = item[1].value
    return len(value) == 8 + 16 * bin(struct.unpack_from("<Q", value)[0]).count("1")


def _pages(stored: StoredImage, pid: int) -> dict[int, bytes]:
    return {addr + offset: data[offset:offset + PAGE_SIZE]
            for addr, data in stored.page_runs(pid) for offset in range(0, len(data), PAGE_SIZE)}


def test_a_block_stores_each_chunk_id_once_and_a_place_per_page_only_when_one_repeats():
    ids = [os.urandom(16) for _ in range(PAGES_PER_BLOCK)]
    value, refs = image._encode_block(dict(enumerate(ids)))
    assert len(value) == 8 and refs == ids
    assert image._decode_block(value, refs) == dict(enumerate(ids))
    zero, other = bytes(16), b"\x01" * 16
    pages = {9: zero, 0: zero, 5: other, 63: zero}
    value, refs = image._encode_block(pages)
    assert refs == [zero, other] and len(value) == 8 + len(pages)
    assert image._decode_block(value, refs) == dict(sorted(pages.items()))


def test_an_image_of_version_27_restores_and_an_incremental_image_over_it_reads_right(
        procs, store, binaries, tmp_path):
    out = tmp_path / "heap.out"
    proc = procs.start([str(binaries / "counter"), str(out), "4"])   # checks its 4 MiB heap each line
    run_until(out, 5)
    checkpointer.checkpoint([proc.pid], store, "new")
    old = _as_version_27(store, load_image(store, "new").root)
    store.set_root("img/old", old)
    store.commit("a version-27 image")
    stored = load_image(store, "old")
    assert stored.meta["version"] == 27
    assert all(map(_in_version_27, store.tree(old).entries(*PAGE_TABLE)))
    pages = _pages(stored, proc.pid)
    assert pages == _pages(load_image(store, "new"), proc.pid)

    # an incremental image over it: one page changed, the other blocks kept in the old encoding
    addr = sorted(pages)[len(pages) // 2]
    image._decoded.clear()
    writer = ImageWriter(store, old)
    writer.add_pages(proc.pid, addr, b"\x5a" * PAGE_SIZE)
    newer = StoredImage(store, writer.finish(stored.processes, stored.files))
    assert _pages(newer, proc.pid) == {**pages, addr: b"\x5a" * PAGE_SIZE}
    kept = list(map(_in_version_27, newer.tree.entries(*PAGE_TABLE)))
    assert kept.count(False) == 1 and len(kept) > 1

    procs.kill(proc)
    for lazy in (False, True):
        size = out.stat().st_size
        restored = checkpointer.restore(store, "old", lazy=lazy)
        procs.restored.append(restored)
        [pid] = restored.pids
        wait_past(out, size)
        assert assert_unbroken(out, proc.pid) > size // 20
        assert ns_pid(pid) == proc.pid
        restored.kill()


def test_a_malformed_page_block_is_refused_naming_what_to_do(store):
    writer = ImageWriter(store)
    writer.add_pages(7, 0x7f0000000000, os.urandom(2 * PAGE_SIZE))
    tree = store.tree(writer.finish([{"pid": 7}], []))
    [(key, entry)] = list(tree.entries(*PAGE_TABLE))
    tree.put(key, entry.value + b"\0" * 3, refs=entry.refs)     # neither version's length
    with pytest.raises(CheckpointError, match="malformed.*sls fsck"):
        list(StoredImage(store, tree.flush()).page_runs(7))
