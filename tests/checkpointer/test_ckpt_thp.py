"""A process that turned transparent huge pages off for itself (prctl PR_SET_THP_DISABLE:
Redis does so to avoid latency spikes and copy-on-write blow-up at fork; zdtm thp_disable)
still has them off after a restore."""
from __future__ import annotations

import checkpointer
from checkpointer import load_image

from ckpt_helpers import ok_lines, reads_after_a_restore, wait_for


def test_transparent_huge_pages_stay_off_after_a_restore(procs, store, tmp_path):
    out = tmp_path / "thp.out"
    proc = procs.python("thp_off.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the target to turn huge pages off")
    checkpointer.checkpoint([proc.pid], store, "thp")
    assert load_image(store, "thp").processes[0]["thp_disabled"] is True
    procs.kill(proc)
    reads_after_a_restore(procs, store, "thp", out)
