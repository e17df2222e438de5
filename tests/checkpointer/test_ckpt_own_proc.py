"""A process restored in a new PID namespace keeps its PID there, so it must find itself
in /proc under that PID: restore mounts a /proc of that namespace for it (in a mount
namespace of its own, a slave of the host's). The host's /proc has another process, or
none, at that number (zdtm pidfd_self, file_locks02/04 read /proc by PID)."""
from __future__ import annotations

import checkpointer

from ckpt_helpers import ok_lines, restored_goes_on, wait_for


def test_a_restored_process_finds_itself_in_proc_by_its_pid(procs, store, tmp_path):
    out = tmp_path / "proc.out"
    proc = procs.python("proc_by_pid.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to read /proc")
    checkpointer.checkpoint([proc.pid], store, "proc")
    procs.kill(proc)
    restored_goes_on(procs, store, "proc", out)     # the target checks itself: no BAD line
