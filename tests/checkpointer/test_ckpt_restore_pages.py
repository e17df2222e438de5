"""Restore's page path (image.page_runs with skip_zero, Store.get_many, the page writer):
zero pages of fresh anonymous memory are left out without being read, zero pages over a
file's different content are written, and a restored process finds every page right
(the target checks itself)."""
from __future__ import annotations

import checkpointer
from checkpointer import load_image
from checkpointer.kernel import PAGE_SIZE
from ckpt_helpers import BIG_HEAP, HEAP_CHECK_LINES, assert_unbroken, ns_pid, ok_lines, wait_for

from test_ckpt_restore import checkpoint_kill_restore, run_until, wait_past


def _pages(image, pid: int, **options) -> dict[int, bytes]:
    pages = {}
    for addr, data in image.page_runs(pid, **options):
        assert addr % PAGE_SIZE == 0 and len(data) % PAGE_SIZE == 0 and data
        for offset in range(0, len(data), PAGE_SIZE):
            pages[addr + offset] = data[offset:offset + PAGE_SIZE]
    return pages


def test_zero_pages_left_out_only_where_memory_is_fresh(procs, store, binaries, tmp_path):
    out, mapped = tmp_path / "zero.out", tmp_path / "mapped"
    mapped.write_bytes(b"\xAA" * 3 * PAGE_SIZE)
    proc = procs.start([str(binaries / "zero_pages"), str(out), str(mapped)])
    run_until(out, 5)
    fmap, anon = (int(x, 16) for x in (tmp_path / "zero.out.addr").read_text().split())
    checkpointer.checkpoint([proc.pid], store, "zero")

    image = load_image(store, "zero")
    every, written = _pages(image, proc.pid), _pages(image, proc.pid, skip_zero=True)
    zero = bytes(PAGE_SIZE)
    assert every[fmap + PAGE_SIZE] == zero and written[fmap + PAGE_SIZE] == zero  # over 0xAA: written
    assert every[anon + 2 * PAGE_SIZE] == zero and anon + 2 * PAGE_SIZE not in written
    assert every[anon + 3 * PAGE_SIZE] == written[anon + 3 * PAGE_SIZE] != zero
    assert {a for a, d in every.items() if d != zero} == {a for a, d in written.items() if d != zero}
    assert set(written) < set(every)

    procs.kill(proc)
    size = out.stat().st_size
    restored = checkpointer.restore(store, "zero")
    procs.restored.append(restored)
    [pid] = restored.pids
    wait_past(out, size)
    assert assert_unbroken(out, proc.pid) > size // 20
    assert ns_pid(pid) == proc.pid


def test_big_heap_restored_twice_from_one_image(procs, store, binaries, tmp_path):
    """Runs of many batches (64 MiB: 64 of image.BATCH_PAGES) written by the page writer,
    the same image restored again: each copy checks its whole heap."""
    out = tmp_path / "heap.out"
    proc = procs.start([str(binaries / "counter"), str(out), *BIG_HEAP])
    run_until(out, 5)
    restored, size = checkpoint_kill_restore(procs, store, proc, out)
    wait_past(out, size, extra_lines=HEAP_CHECK_LINES)
    restored.kill()
    size = out.stat().st_size
    again = checkpointer.restore(store, "img")
    procs.restored.append(again)
    wait_for(lambda: out.stat().st_size >= size + HEAP_CHECK_LINES * 20 or any("BAD" in x for x in ok_lines(out)),
             "the second copy to check its heap")
    assert assert_unbroken(out, proc.pid) >= size // 20 + HEAP_CHECK_LINES


def test_pages_outside_ranges_given_in_any_order(procs, store, binaries, tmp_path):
    """page_runs(outside=...) (lazy restore's split) leaves out exactly the pages inside
    the ranges, whatever their order, and nothing else."""
    out = tmp_path / "heap.out"
    proc = procs.start([str(binaries / "counter"), str(out), "4"])
    run_until(out, 3)
    checkpointer.checkpoint([proc.pid], store, "img")
    image = load_image(store, "img")
    every = _pages(image, proc.pid)
    addrs = sorted(every)
    ranges = [(addrs[len(addrs) // 4], addrs[len(addrs) // 3] + 3 * PAGE_SIZE),
              (addrs[len(addrs) // 2] + PAGE_SIZE, addrs[-1])]
    expected = {a: d for a, d in every.items() if not any(s <= a < e for s, e in ranges)}
    assert 0 < len(expected) < len(every)
    assert _pages(image, proc.pid, outside=ranges) == expected
    assert _pages(image, proc.pid, outside=ranges[::-1]) == expected
