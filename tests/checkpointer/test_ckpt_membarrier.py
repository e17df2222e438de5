"""membarrier(2) registrations (zdtm membarrier): a process registered for private
expedited barriers (liburcu, the .NET runtime) may still issue them after a restore; an
unregistered one gets EPERM, which such a runtime takes for a fatal error."""
from __future__ import annotations

import checkpointer
from checkpointer import load_image

from ckpt_helpers import ok_lines, restored_goes_on, wait_for


def test_membarrier_registrations_come_back(procs, store, tmp_path):
    out = tmp_path / "membarrier.out"
    proc = procs.python("membarrier_user.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to register and issue barriers")
    checkpointer.checkpoint([proc.pid], store, "membarrier")
    assert load_image(store, "membarrier").processes[0]["membarrier"] == (1 << 4) | (1 << 6)
    procs.kill(proc)
    restored_goes_on(procs, store, "membarrier", out)
