"""The memory a large capture used is given back once its pages are stored (checkpointer.heap):
a daemon that checkpointed a 1 GiB group held 2.1 GB after it, and each fork it made
(a lazy restore's page server) cost ~20 ms of CPU more per such GiB. (Without a capture
before, as in a fresh process, malloc still maps such buffers apart and unmaps them.)"""
from __future__ import annotations

import os

from checkpointer import capture, freeze
from checkpointer.incremental import Incremental
from ckpt_helpers import ok_lines, wait_for

HEAP_MIB = 256


def _resident_mib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


def test_a_large_capture_leaves_no_memory_held_once_stored(procs, store, binaries, tmp_path):
    out = tmp_path / "rewriter.out"
    proc = procs.start([str(binaries / "rewriter"), str(out), str(HEAP_MIB)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 1, "the rewriter to sweep its heap")
    with freeze([proc.pid], tree=True) as frozen:       # as a daemon has: captures made before
        capture(frozen, store)
    inc = Incremental()
    try:
        before = _resident_mib()
        with freeze([proc.pid], tree=True) as frozen:   # its pages copied after the thaw (a fork snapshot)
            pending = inc.capture_snapshot(frozen, store)
        assert pending.snapshots, f"{HEAP_MIB} MiB of pages should be copied from a fork snapshot"
        pending.complete()
        del pending
        assert inc.last_pages * 4096 >= HEAP_MIB << 20
        grown = _resident_mib() - before
    finally:
        inc.close()
    assert grown < HEAP_MIB // 4, f"{grown} MiB more resident after storing {HEAP_MIB} MiB of pages"
