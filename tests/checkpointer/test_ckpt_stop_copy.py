"""The pages an incremental snapshot checkpoint copies inside the stop (few pages written
again: no fork) are copied on the other CPU while the tracer reads the rest of the
process (checkpointer/nativeworker.py: a thread that needs no Python lock), into memory
prepared before the freeze (copybuffer.py). The image must still hold the memory of the freeze instant, never a page
the target wrote after the thaw."""
from __future__ import annotations

import os

import pytest

import checkpointer
from checkpointer import freeze, nativeworker
from checkpointer.incremental import Incremental
from ckpt_helpers import assert_unbroken, ok_lines, wait_for


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the copy runs on another CPU: needs two")
def test_pages_copied_on_the_other_cpu_hold_the_freeze_instant(procs, store, binaries, tmp_path, monkeypatch):
    """The rewriter sweeps a 1 MiB heap (256 pages, rewritten between any two checkpoints:
    copied in the stop, by the native worker) and checks each page against its previous
    sweep: a page of the image newer or older than the instant makes the restored rewriter
    write BAD."""
    batches = []
    submit = nativeworker.submit
    monkeypatch.setattr(nativeworker, "submit", lambda *args, **kw: batches.append(submit(*args, **kw)) or batches[-1])
    out = tmp_path / "rewriter.out"
    proc = procs.start([str(binaries / "rewriter"), str(out), "1"])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the rewriter to sweep its heap")
    inc = Incremental()
    try:
        for _ in range(6):
            lines = len(ok_lines(out))
            wait_for(lambda: len(ok_lines(out)) >= lines + 2, "two more sweeps")
            inc.precopy()
            with freeze([proc.pid], tree=True) as frozen:
                pending = inc.capture_snapshot(frozen, store)
            assert not pending.snapshots, "256 pages should be copied inside the stop, not forked"
            lines = len(ok_lines(out))     # stored only after the target swept over them again
            wait_for(lambda: len(ok_lines(out)) >= lines + 2, "two more sweeps after the thaw")
            root = pending.complete()
        assert len(batches) == 6 and None not in batches, batches
    finally:
        inc.close()
    assert 256 <= inc.last_pages < 300, inc.last_pages
    procs.kill(proc)
    size = out.stat().st_size
    restored = checkpointer.restore(store, root)
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 3 * 21, "the restored rewriter to sweep on")
    assert assert_unbroken(out, proc.pid) >= 3
