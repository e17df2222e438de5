"""A process inside vfork() for a moment (a shell loop's vfork child about to exec) is
waited for by the freeze, not refused (checkpointer/freeze.py, VFORK_WAIT_S); one whose
child never execs is still refused (test_ckpt_attributes)."""
from __future__ import annotations

import checkpointer
from ckpt_helpers import wait_for


def test_a_parent_briefly_inside_vfork_is_checkpointed(procs, store, binaries, tmp_path):
    out = tmp_path / "vfork_loop.out"
    proc = procs.start([str(binaries / "vfork_loop"), str(out)])
    wait_for(lambda: out.exists() and out.read_text() == "ready", "the vfork loop to run")
    for i in range(10):          # the parent is inside vfork() about 2/3 of the time
        checkpointer.checkpoint([proc.pid], store, f"loop-{i}", durable=False)
    assert len(checkpointer.images(store)) == 10
