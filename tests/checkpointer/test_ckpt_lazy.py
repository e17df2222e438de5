"""Lazy restore: the process runs before its memory is in; a page server (a forked child,
userfaultfd MISSING) answers its faults from the image, pushes the rest in the
background and exits; until then the process cannot be checkpointed."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import checkpointer
from checkpointer import CheckpointError, load_image
from checkpointer import kernel
from checkpointer.lazy import MARK_DIR
from ckpt_helpers import BIG_HEAP, HEAP_CHECK_LINES, assert_unbroken, ok_lines, wait_for


WALL = 0x40000000


def _started(out: Path, lines: int = 5) -> None:
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= lines, f"{lines} lines of {out.name}")


def _checkpoint_and_kill(procs, store, proc, out: Path) -> int:
    checkpointer.checkpoint([proc.pid], store, "img")
    procs.kill(proc)
    return len(ok_lines(out))


def _counter_restored_lazily(procs, store, binaries, out: Path, *heap: str):
    """A counter with `heap` (its HEAP_MIB and SLICE_KIB), checkpointed, killed and restored lazily:
    (the counter's first process, the restored tree, its lines before the kill)."""
    proc = procs.start([str(binaries / "counter"), str(out), *heap])
    _started(out)
    lines = _checkpoint_and_kill(procs, store, proc, out)
    restored = checkpointer.restore(store, "img", lazy=True)
    procs.restored.append(restored)
    return proc, restored, lines


def test_lazy_restore_serves_a_large_heap_and_the_server_exits_when_all_is_in(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc, restored, lines = _counter_restored_lazily(procs, store, binaries, out, *BIG_HEAP)
    server = restored.page_server
    assert server is not None and os.path.exists(f"/proc/{server.pid}")
    wait_for(lambda: len(ok_lines(out)) >= lines + HEAP_CHECK_LINES, "the lazily restored counter to check its heap",
             timeout=120)
    assert restored.wait_pages_in(timeout=120), "the page server did not finish"
    assert not (MARK_DIR / str(restored.pids[0])).exists()
    assert assert_unbroken(out, proc.pid) >= lines + HEAP_CHECK_LINES
    # all in: it is an ordinary process again, checkpointed and restored as usual
    checkpointer.checkpoint(restored.pids, store, "again")
    again = load_image(store, "again")
    pages = again.page_count()
    assert pages >= 64 * 256
    assert again.holds_pages(pages) and again.holds_pages(4096) and not again.holds_pages(pages + 1)
    restored.kill()
    size = len(ok_lines(out))
    second = checkpointer.restore(store, "again")
    procs.restored.append(second)
    wait_for(lambda: len(ok_lines(out)) >= size + HEAP_CHECK_LINES, "the second restore to check its heap", timeout=120)
    assert assert_unbroken(out, proc.pid) >= size + HEAP_CHECK_LINES


def test_a_process_still_served_is_not_checkpointed(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc, restored, lines = _counter_restored_lazily(procs, store, binaries, out, "256")
    server = restored.page_server.pid
    os.kill(server, signal.SIGSTOP)  # 256 MiB take far longer to push than this takes
    try:
        assert (MARK_DIR / str(restored.pids[0])).exists()
        with pytest.raises(CheckpointError, match="restored lazily.*still coming in"):
            checkpointer.checkpoint(restored.pids, store, "too-early")
        assert "too-early" not in checkpointer.images(store)
    finally:
        os.kill(server, signal.SIGCONT)
    assert restored.wait_pages_in(timeout=180), "the page server did not finish"
    wait_for(lambda: len(ok_lines(out)) >= lines + 20, "the restored counter to run on")
    checkpointer.checkpoint(restored.pids, store, "in-time")
    assert assert_unbroken(out, proc.pid) >= lines + 20


def test_lazy_restore_follows_unmaps_new_mappings_and_brk(procs, store, binaries, tmp_path):
    out = tmp_path / "remapper.out"
    proc = procs.start([str(binaries / "remapper"), str(out)])
    _started(out, 20)
    checkpointer.checkpoint([proc.pid], store, "img")
    procs.kill(proc)
    size = len(ok_lines(out))
    restored = checkpointer.restore(store, "img", lazy=True)
    procs.restored.append(restored)
    wait_for(lambda: len(ok_lines(out)) >= size + 100, "the lazily restored remapper to write on")
    assert restored.wait_pages_in(timeout=120)
    assert assert_unbroken(out, proc.pid) >= size + 100


def test_lazy_restore_of_a_process_tree(procs, store, binaries, tmp_path, subreaper):
    out = tmp_path / "tree.out"
    proc = procs.start([str(binaries / "tree"), str(out)])
    _started(out, 20)
    checkpointer.checkpoint([proc.pid], store, "img", tree=True)
    procs.kill(proc)
    size = len(ok_lines(out))
    restored = checkpointer.restore(store, "img", lazy=True)
    procs.restored.append(restored)
    wait_for(lambda: len(ok_lines(out)) >= size + 100, "the lazily restored tree to run on")
    assert restored.wait_pages_in(timeout=120)
    assert "BAD" not in out.read_text()


def test_children_forked_before_all_pages_are_in_see_the_same_memory(procs, store, binaries, tmp_path):
    out = tmp_path / "forker.out"
    proc = procs.start([str(binaries / "forker"), str(out), "64"])
    _started(out)
    checkpointer.checkpoint([proc.pid], store, "img", tree=True)  # with the child it may be waiting for
    procs.kill(proc)
    lines = len(ok_lines(out))
    restored = checkpointer.restore(store, "img", lazy=True)
    procs.restored.append(restored)
    # each line is a child that read all 64 MiB: the first ones fork while pages are missing
    wait_for(lambda: len(ok_lines(out)) >= lines + 5, "children of the lazily restored process", timeout=120)
    assert restored.wait_pages_in(timeout=120)
    wait_for(lambda: len(ok_lines(out)) >= lines + 10, "more children after all pages are in", timeout=120)
    assert assert_unbroken(out, proc.pid) >= lines + 10


def _signals_until_death(pid: int) -> tuple[list[int], int]:
    """`pid` (traced by us, not our child) until it dies: the signals it got meanwhile
    (each passed on) and the signal that ended it (0 if it exited)."""
    seen = []
    while True:
        _, status = os.waitpid(pid, WALL)
        if os.WIFSTOPPED(status):
            seen.append(os.WSTOPSIG(status))
            kernel.ptrace(kernel.PTRACE_CONT, pid, 0, os.WSTOPSIG(status))
        else:
            return seen, os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def test_processes_whose_page_server_dies_are_killed_never_run_on_zeros(procs, store, binaries, tmp_path):
    out = tmp_path / "counter.out"
    proc, restored, lines = _counter_restored_lazily(procs, store, binaries, out, "256")
    pid = restored.pids[0]
    kernel.ptrace(kernel.PTRACE_SEIZE, pid, 0, 0)
    # 256 MiB take seconds to push. Zeros instead of its pages would crash it (its TLS and
    # libc's data are lazy memory too) or make it write a BAD line: it must be SIGKILLed
    os.kill(restored.page_server.pid, signal.SIGKILL)
    traced = _signals_until_death(pid)
    assert traced == ([], signal.SIGKILL), f"signals it got, signal that ended it: {traced}"
    assert restored.wait_pages_in(timeout=60), "the dead page server was not reaped"
    wait_for(lambda: not (MARK_DIR / str(pid)).exists(), "the page guard to remove the dead server's mark")
    restored.launcher.wait(timeout=60)
    assert assert_unbroken(out, proc.pid) >= lines  # no line computed from zeros
    # the image is intact: restored again (eagerly), the counter goes on checking its heap
    size = len(ok_lines(out))
    again = checkpointer.restore(store, "img")
    procs.restored.append(again)
    wait_for(lambda: len(ok_lines(out)) >= size + 200, "the second restore to run on", timeout=120)
    assert assert_unbroken(out, proc.pid) >= size + 200


def test_lazy_restore_of_a_process_with_thousands_of_mappings(procs, store, tmp_path):
    """The page server learns each process's ranges (one per mapping) from the restorer:
    thousands of them (a malloc-heavy program, a JVM) are more than one message held; and
    a run of pages pushed in the background must not span two of them (one UFFDIO_COPY
    fills one mapping: pages of such a run were dropped, and then read as zeros)."""
    out = tmp_path / "mappings.out"
    proc = procs.python("many_mappings.py", str(out), "3000")
    _started(out)
    lines = _checkpoint_and_kill(procs, store, proc, out)
    restored = checkpointer.restore(store, "img", lazy=True)
    procs.restored.append(restored)
    wait_for(lambda: len(ok_lines(out)) >= lines + 100, "the lazily restored process to check its pages")
    assert restored.wait_pages_in(timeout=120), "the page server did not finish"
    assert assert_unbroken(out, proc.pid) >= lines + 100


def test_a_restore_maps_more_mappings_than_one_trip_of_injected_calls_holds(procs, store, tmp_path):
    """The mappings are made by batches of injected calls (mmap, then madvise and mlock
    as the image says); 12,000 mappings with three pieces of advice each (stress-ng
    --mmap) are more calls than the restorer's call area holds in one trip (the restore
    failed: 'N batched system calls do not fit ...'). Eager restore: lazy is the test above."""
    out = tmp_path / "mappings.out"
    proc = procs.python("many_mappings.py", str(out), "12000", "advised")
    _started(out)
    lines = _checkpoint_and_kill(procs, store, proc, out)
    procs.restored.append(checkpointer.restore(store, "img"))
    wait_for(lambda: len(ok_lines(out)) >= lines + 200, "the restored process to check all its pages", timeout=120)
    assert assert_unbroken(out, proc.pid) >= lines + 200

