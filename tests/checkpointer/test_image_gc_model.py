"""Garbage collection of a store of process images, against a model: a group's checkpoints
(incremental images over their parent, pages written at random, equal pages shared) under a
keep-last-2 retention, then a collection with every pack sealed (or two of a server's own,
the first of which may spare young packs of pages stored as they are). Whatever the history, GC
never frees a page a retained image names (each such image reads back page for page as the
model says), and it frees every page that only forgotten images named. The marking reads
the images' nodes through tree.node_links; the images hold blocks of both encodings
(docs/FORMAT.md, "Process images": each chunk once, or a chunk repeated in a block)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from checkpointer import image
from checkpointer.image import BLOCK, ImageWriter, StoredImage
from checkpointer.kernel import PAGE_SIZE
from objectstore import RetentionPolicy, Store
from objectstore.gc import collect

PID = 9
BASE = 0x7f0000000000
PAGES = st.integers(0, 4 * BLOCK // PAGE_SIZE - 1)       # four blocks' pages
CONTENT = st.integers(0, 30)                              # few contents: pages repeat within blocks
CHECKPOINT = st.lists(st.tuples(PAGES, CONTENT), min_size=1, max_size=40)


def _page(content: int) -> bytes:
    return content.to_bytes(2, "big") * (PAGE_SIZE // 2)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(history=st.lists(CHECKPOINT, min_size=1, max_size=8), cold=st.booleans(), spare=st.booleans())
def test_gc_keeps_every_page_a_retained_image_names_and_frees_the_others(history, cold, spare):
    tmp = Path(tempfile.mkdtemp(prefix="slsfs-imagegc-"))
    try:
        with Store.init(tmp / "store") as store:
            store.packs.pack_limit = 64 << 10
            store.retention = RetentionPolicy(keep_last=2, minutely=0, hourly=0, daily=0)
            root, model, images = None, {}, []
            for writes in history:
                if cold:
                    image._decoded.clear()           # the writer decodes its parent's blocks itself
                writer = ImageWriter(store, root)
                for page, content in writes:
                    writer.add_pages(PID, BASE + page * PAGE_SIZE, _page(content))
                    model[page] = content
                root = writer.finish([{"pid": PID, "vmas": []}], [])
                store.set_root("img/g", root)
                images.append((store.commit("checkpoint").id, root, dict(model)))
            store.packs.seal_active()
            if spare:       # a server's own collections: the first may leave young packs as they were
                collect(store, spare_young=True)
                _retained_images_read_back(store, images)
                collect(store, spare_young=True)            # ... which the next one compacts
            else:
                store.gc()
            _retained_images_read_back(store, images)
            retained = {c.id for c in store.log()}
            kept = {content for cid, _, pages in images if cid in retained for content in pages.values()}
            for content in {c for writes in history for _, c in writes}:
                assert store.has(store.id_of(_page(content))) == (content in kept), content
            assert store.fsck() == []
    finally:
        shutil.rmtree(tmp)


def _retained_images_read_back(store: Store, images: list[tuple[int, bytes, dict[int, int]]]) -> None:
    """Each image whose commit the store keeps reads back page for page as the model says."""
    retained = {c.id for c in store.log()}
    for cid, root, pages in images:
        if cid in retained:
            read = {(addr - BASE) // PAGE_SIZE + i: data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
                    for addr, data in StoredImage(store, root).page_runs(PID)
                    for i in range(len(data) // PAGE_SIZE)}
            assert read == {page: _page(content) for page, content in pages.items()}
