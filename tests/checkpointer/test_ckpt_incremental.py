"""Incremental checkpoints (userfaultfd WP_ASYNC + PAGEMAP_SCAN): later images store
only what was written, yet each one restores alone."""
from __future__ import annotations

import gc

import checkpointer
from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental
from ckpt_helpers import BIG_HEAP, HEAP_CHECK_LINES, assert_unbroken, children_of, ns_pid, ok_lines, wait_for


def _lines(path, n):
    wait_for(lambda: path.exists() and len(ok_lines(path)) >= n, f"{n} lines")


def _checkpoints(store, pid: int, count: int, out) -> tuple[list[int], list]:
    inc = Incremental()
    stored, roots = [], []
    try:
        for i in range(count):
            _lines(out, len(ok_lines(out)) + 10)
            with freeze([pid], tree=True) as frozen:
                roots.append(inc.capture(frozen, store))
            stored.append(inc.last_pages)
    finally:
        inc.close()
    return stored, roots


def _kill_and_restore(procs, store, proc, root, out, new_bytes: int):
    """Kill the target, restore `root`, wait until the restored target wrote `new_bytes`
    more to `out`; (the restored processes, the size of `out` at the kill)."""
    procs.kill(proc)
    size = out.stat().st_size
    restored = checkpointer.restore(store, root)
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + new_bytes, "the restored target to write on")
    return restored, size


def test_incremental_images_store_little_and_restore_whole(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out), *BIG_HEAP])
    _lines(out, 5)
    stored, roots = _checkpoints(store, proc.pid, 3, out)
    print("pages stored per checkpoint", stored)
    assert stored[0] >= 64 * 256 and max(stored[1:]) < 200, stored
    assert load_image(store, roots[-1]).page_count() >= 64 * 256  # a complete image
    restored, size = _kill_and_restore(procs, store, proc, roots[-1], out, new_bytes=HEAP_CHECK_LINES * 20)
    assert ns_pid(restored.pids[0]) == proc.pid
    assert assert_unbroken(out, proc.pid) > HEAP_CHECK_LINES


def test_checkpoints_leave_no_reference_cycles_behind(procs, store, binaries, tmp_path):
    """A checkpoint's capture (its page copies, ranges, image writer, metadata) is freed
    when the checkpoint is done, not left for Python's full cyclic collection, which a
    daemon runs rarely (mount.daemon.pace_collector): ~200 captures of a Redis group were
    found waiting for it, hundreds of MB of the daemon's memory."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out), "16"])
    _lines(out, 5)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        _checkpoints(store, proc.pid, 3, out)
        gc.collect()
        left = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("checkpointer")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left, f"objects of the checkpoints freed only by the cyclic collector: {left}"


def test_incremental_follows_a_growing_python_heap(procs, store, tmp_path):
    out = tmp_path / "python.out"
    proc = procs.python("live_objects.py", str(out))
    _lines(out, 10)
    stored, roots = _checkpoints(store, proc.pid, 4, out)
    print("pages stored per checkpoint", stored)
    assert max(stored[1:]) < stored[0], stored
    _, size = _kill_and_restore(procs, store, proc, roots[-1], out, new_bytes=20 * 29)
    assert assert_unbroken(out, proc.pid) > size // 29


def test_fork_snapshot_copies_after_the_thaw_and_leaves_no_child(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out), "32"])
    _lines(out, 5)
    inc = Incremental()
    try:
        roots = []
        for _ in range(3):
            _lines(out, len(ok_lines(out)) + 10)
            with freeze([proc.pid], tree=True) as frozen:
                pending = inc.capture_snapshot(frozen, store)
            roots.append(pending.complete())
            assert children_of(proc.pid) == []  # the snapshot was killed and reaped
    finally:
        inc.close()
    assert load_image(store, roots[-1]).page_count() >= 32 * 256
    _, size = _kill_and_restore(procs, store, proc, roots[-1], out, new_bytes=520 * 20)
    assert assert_unbroken(out, proc.pid) > 520


def test_incremental_drops_unmapped_regions_and_follows_new_ones(procs, store, binaries, tmp_path):
    out = tmp_path / "remapper.out"
    proc = procs.start([str(binaries / "remapper"), str(out)])
    _lines(out, 5)
    _, roots = _checkpoints(store, proc.pid, 4, out)
    _, size = _kill_and_restore(procs, store, proc, roots[-1], out, new_bytes=30 * 20)
    assert assert_unbroken(out, proc.pid) > size // 20


def test_a_process_that_execs_is_captured_whole_then_incrementally(procs, store, tmp_path):
    """After an exec the tracker's userfaultfd belongs to the old memory: the next
    checkpoint must notice, store the new memory whole and track it from then on."""
    out, trigger = tmp_path / "exec.out", tmp_path / "exec.trigger"
    proc = procs.python("exec_once.py", str(out), str(trigger))
    _lines(out, 10)
    inc = Incremental()
    stored, roots = [], []
    try:
        for i in range(4):
            if i == 2:
                trigger.touch()
                wait_for(lambda: ok_lines(out)[-1].split()[2] == "after", "the target to exec")
            _lines(out, len(ok_lines(out)) + 10)
            with freeze([proc.pid], tree=True) as frozen:
                roots.append(inc.capture(frozen, store))
            stored.append(inc.last_pages)
    finally:
        inc.close()
    print("pages stored per checkpoint", stored)
    assert stored[2] > 3 * max(stored[1], stored[3]), stored   # whole after the exec, then incremental
    _, size = _kill_and_restore(procs, store, proc, roots[-1], out, new_bytes=20 * 30)
    assert assert_unbroken(out, proc.pid) > size // 30
    assert ok_lines(out)[-1].split()[2] == "after"
