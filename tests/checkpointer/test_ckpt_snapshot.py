"""Fork snapshots (checkpointer.snapshot): the pages are copied after the thaw, while the
target rewrites them, yet the image holds the values of the checkpoint instant; a snapshot
killed in the middle of the copy fails the checkpoint with a clear error and leaves no
image, a target killed then still gets its whole image; no snapshot is left behind."""
from __future__ import annotations

import os
import signal

import pytest

import checkpointer
from checkpointer import CheckpointError, freeze
from checkpointer.incremental import Incremental
from ckpt_helpers import assert_unbroken, children_of, ok_lines, wait_for

HEAP_MIB = "16"


def _sweeps(out) -> int:
    return len(ok_lines(out))


def _state(pid: int) -> str | None:
    """The state letter of a process (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def _start(procs, binaries, tmp_path, target: str = "rewriter", sweeps: int = 3):
    """A self-checking target sweeping a HEAP_MIB heap, once it has swept `sweeps` times;
    (process, its output file)."""
    out = tmp_path / f"{target}.out"
    proc = procs.start([str(binaries / target), str(out), HEAP_MIB])
    wait_for(lambda: out.exists() and _sweeps(out) >= sweeps, f"the {target} to sweep its heap")
    return proc, out


def _restore_and_check(procs, store, root, out, pid: int, sweeps: int = 3) -> None:
    """Restore `root`; the restored target's next `sweeps` lines must come, unbroken: it
    checks every page in its first sweeps (a page newer than the instant would be BAD)."""
    size = out.stat().st_size
    restored = checkpointer.restore(store, root)
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + sweeps * 21, "the restored target to sweep on")
    assert assert_unbroken(out, pid) >= sweeps


def _snapshot_capture(inc: Incremental, pid: int, store):
    """A capture whose pages wait in a fork snapshot (asserted: this is what is tested)."""
    with freeze([pid], tree=True) as frozen:
        pending = inc.capture_snapshot(frozen, store)
    assert pending.snapshots, "16 MiB of written pages should be copied from a fork snapshot"
    return pending


@pytest.mark.parametrize("rounds", [1, 3], ids=["full", "incremental"])
def test_pages_rewritten_after_the_thaw_are_stored_as_they_were_at_the_instant(procs, store, binaries,
                                                                               tmp_path, rounds):
    proc, out = _start(procs, binaries, tmp_path)
    inc = Incremental()
    try:
        for _ in range(rounds):      # the last one incremental (every page written since) when rounds > 1
            pending = _snapshot_capture(inc, proc.pid, store)
            thawed_at = _sweeps(out)
            # every page is rewritten (twice) before a single page is copied from the snapshot
            wait_for(lambda: _sweeps(out) >= thawed_at + 2, "the rewriter to rewrite its heap after the thaw")
            root = pending.complete()
            assert children_of(proc.pid) == []  # the snapshot was killed and reaped
    finally:
        inc.close()
    procs.kill(proc)
    _restore_and_check(procs, store, root, out, proc.pid)


def test_a_target_killed_during_the_copy_still_gets_its_whole_image_of_the_instant(procs, store, binaries,
                                                                                   tmp_path, subreaper):
    """The snapshot outlives its parent (it becomes an orphan) and holds the memory of the
    instant: the image is whole and restores; the snapshot is gone afterwards."""
    proc, out = _start(procs, binaries, tmp_path)
    inc = Incremental()
    try:
        pending = _snapshot_capture(inc, proc.pid, store)
        child = pending.snapshots[0].child
        add_pages = pending.writer.add_pages

        def kill_then_add(*run):     # the first run copied: the target dies
            os.kill(proc.pid, signal.SIGKILL)
            add_pages(*run)
        pending.writer.add_pages = kill_then_add
        root = pending.complete()
    finally:
        inc.close()
    proc.wait()
    subreaper([child])               # the orphaned snapshot came to us (a subreaper): gone now
    assert not os.path.exists(f"/proc/{child}")
    _restore_and_check(procs, store, root, out, proc.pid)


def test_a_snapshot_killed_during_the_copy_fails_the_checkpoint_and_the_target_runs_on(procs, store, binaries,
                                                                                       tmp_path):
    proc, out = _start(procs, binaries, tmp_path)
    inc = Incremental()
    try:
        pending = _snapshot_capture(inc, proc.pid, store)
        child = pending.snapshots[0].child
        os.kill(child, signal.SIGKILL)   # as a kill of the whole PID namespace would
        # ... once it has died (its memory gone): a killed task exits only once it gets a CPU,
        # and at load 10 the whole copy could be over before (1 run in 8 "did not raise")
        wait_for(lambda: _state(child) in ("Z", "X", None), "the killed snapshot to die")
        with pytest.raises(CheckpointError, match="fork snapshot of process .* went away"):
            pending.complete()
        assert inc.parent is None
        assert children_of(proc.pid) == []
        with freeze([proc.pid], tree=True) as frozen:   # the next checkpoint works
            root = inc.capture(frozen, store)
    finally:
        inc.close()
    size = _sweeps(out)
    wait_for(lambda: _sweeps(out) >= size + 5, "the rewriter to run on")
    assert assert_unbroken(out, proc.pid) >= size + 5
    assert root is not None


def test_dontfork_and_wipeonfork_memory_is_copied_in_the_stop(procs, store, binaries, tmp_path):
    """A fork snapshot lacks MADV_DONTFORK memory and holds MADV_WIPEONFORK memory empty:
    those pages are read inside the stop, so the image still holds them."""
    proc, out = _start(procs, binaries, tmp_path, "fork_flags", sweeps=5)
    inc = Incremental()
    try:
        pending = _snapshot_capture(inc, proc.pid, store)
        root = pending.complete()
    finally:
        inc.close()
    procs.kill(proc)
    size = _sweeps(out)
    restored = checkpointer.restore(store, root)
    procs.restored.append(restored)
    wait_for(lambda: _sweeps(out) >= size + 10, "the restored target to check both regions")
    assert assert_unbroken(out, proc.pid) >= size + 10
