"""Memfds and unlinked files opened again (zdtm memfd04, memfd05, shmemfd): a restored
memfd can still be executed (a memfd opened again counts as a writer: ETXTBSY), and an
unlinked file keeps its open flags (one made with O_TMPFILE showed it in F_GETFL)."""
from __future__ import annotations

import checkpointer

from ckpt_helpers import ok_lines, restored_goes_on, wait_for


def test_a_restored_memfd_runs_and_an_unlinked_file_keeps_its_flags(procs, store, tmp_path):
    out = tmp_path / "memfd.out"
    proc = procs.python("memfd_exec.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to run its memfd and go on")
    assert ok_lines(out)[0] == "exec ok"
    checkpointer.checkpoint([proc.pid], store, "memfd")
    procs.kill(proc)
    restored_goes_on(procs, store, "memfd", out)
    (tmp_path / "run-now").touch()
    wait_for(lambda: ok_lines(out).count("exec ok") == 2 or any("BAD" in l for l in ok_lines(out)),
             "the restored process to run its memfd")
    bad = [line for line in ok_lines(out) if "BAD" in line]
    assert not bad, f"the target reported: {bad[:3]}"
