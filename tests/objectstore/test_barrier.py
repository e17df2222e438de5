"""A barrier in halves (Store.begin_barrier / wait in another thread / end_barrier): the
owner goes on putting and committing during the fsync; the barrier covers exactly the
commits made before it began, and what came after stays to be made durable."""
from __future__ import annotations

import threading

from objectstore import Store


def test_a_barrier_covers_the_commits_before_it_and_not_those_during_it(store: Store, store_dir):
    store.put(b"before " * 100)
    before = store.commit("before", durable=False)
    pending = store.begin_barrier()
    waiter = threading.Thread(target=pending.wait)
    waiter.start()
    during_chunk = store.put(b"during " * 100)      # the owner's thread goes on meanwhile
    during = store.commit("during", durable=False)
    waiter.join()
    assert store.end_barrier(pending) == before.id
    assert store.durable_id == before.id < during.id
    assert store.packs.unsynced                     # "during" still waits for a barrier
    assert store.barrier() == during.id and not store.packs.unsynced
    store.close()
    with Store.open(store_dir) as again:
        assert [c.label for c in again.log()][:2] == ["during", "before"]
        assert again.get(during_chunk) == b"during " * 100


def test_a_barrier_with_nothing_new_is_immediate(store: Store):
    commit = store.commit("one")                    # durable already
    pending = store.begin_barrier()
    pending.wait()
    assert store.end_barrier(pending) == commit.id == store.durable_id


def test_a_plain_barrier_fsyncs_the_pack_and_leaves_no_descriptor(store: Store, monkeypatch):
    """Store.barrier() once skipped PendingBarrier.wait: no fsync (invisible to SIGKILL
    tests: the page cache survives a killed process, not a power cut) and one leaked
    descriptor per call. The pack is made durable with fdatasync (its data and size)."""
    import os
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    store.put(b"payload " * 100)
    commit = store.commit("not yet durable", durable=False)
    fds_before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    assert store.barrier() == commit.id == store.durable_id
    monkeypatch.undo()
    assert len(synced) == 1 and not store.packs.unsynced
    assert len(os.listdir("/proc/self/fd")) == fds_before


def _resident_pages(path) -> int:
    """Pages of the file in the page cache (mincore over a mapping of it)."""
    import ctypes
    import mmap
    import os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vector = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
            assert libc.mincore(address, size, vector) == 0, os.strerror(ctypes.get_errno())
            return sum(byte & 1 for byte in vector.raw)
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)


def test_pages_put_as_rarely_read_leave_the_page_cache_once_durable_and_read_back(store: Store, store_dir):
    """A checkpoint's pages are mostly superseded before anyone reads them: kept in the page
    cache they would crowd out the applications' own files (and, in a VM that hands free
    pages back to its host, cost a host fault per new page). Once durable they are let go
    of, and read back from the disk, the same bytes. Other chunks (a mount's file data and
    tree nodes, read back at the next partial write or lookup) stay cached."""
    import os
    pack = store_dir / "packs" / f"pack-{store.packs.active:08d}.pack"
    pages = [os.urandom(4096) for _ in range(2048)]         # 8 MiB that lz4 cannot shrink
    cids = store.put_many(pages, compress_later=True, rarely_read=True)
    store.commit("pages", durable=False)
    assert _resident_pages(pack) >= 1024                   # written out, not yet durable: cached
    store.barrier()
    assert _resident_pages(pack) <= 2                      # the partial pages at the run's edges
    files = [os.urandom(4096) for _ in range(256)]
    file_ids = store.put_many(files)
    store.commit("file data")
    assert _resident_pages(pack) >= 256
    assert store.get_many(cids) == pages and store.get_many(file_ids) == files
    store.close()
    with Store.open(store_dir) as again:
        assert again.get_many(cids) == pages
