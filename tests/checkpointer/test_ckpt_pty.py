"""Pseudo-terminals: a parent holding a pty master, its child a session leader whose
controlling terminal is the slave, and a grandchild job in the foreground, are
checkpointed, killed and restored: the pair works again with the same window size and
settings, the session (the job included) has its controlling terminal and the job is
still in the foreground (the target checks all of it in every exchange)."""
from __future__ import annotations

import os
import signal

import checkpointer
from checkpointer import load_image

from ckpt_helpers import assert_unbroken, children_of, ok_lines, wait_for

LINE = 20


def test_pty_pair_with_its_session_and_foreground_job_comes_back(procs, store, tmp_path, subreaper):
    out = tmp_path / "pty.out"
    proc = procs.python("pty_pair.py", str(out))
    session = []
    try:
        wait_for(lambda: out.exists() and len(ok_lines(out)) >= 50, "50 exchanges over the pty")
        [leader] = children_of(proc.pid)
        session = [leader] + children_of(leader)
        assert len(session) == 2
        checkpointer.checkpoint([proc.pid], store, "pty", tree=True)
        image = load_image(store, "pty")
        [master] = [f for f in image.files if f["kind"] == "pty_master"]
        [leader_meta] = [p for p in image.processes if p.get("ctty")]
        assert leader_meta["ctty"] == {"pts": master["index"], "foreground": session[1]}
    finally:
        procs.kill(proc)
        for pid in session:
            os.kill(pid, signal.SIGKILL)
        subreaper(session)
    size = out.stat().st_size
    restored = checkpointer.restore(store, "pty")
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 200 * LINE, "200 exchanges over the restored pty")
    assert assert_unbroken(out, proc.pid) > size // LINE + 190
