"""A process restored in a new PID namespace keeps its PID there, so it must find itself
in /proc under that PID: restore mounts a /proc of that namespace for it (in a mount
namespace of its own, a slave of the host's). The host's /proc has another process, or
none, at that number (zdtm pidfd_self, file_locks02/04 read /proc by PID)."""
from __future__ import annotations

from ckpt_helpers import goes_on_after_a_restore


def test_a_restored_process_finds_itself_in_proc_by_its_pid(procs, store, tmp_path):
    out = tmp_path / "proc.out"
    proc = procs.python("proc_by_pid.py", str(out))
    goes_on_after_a_restore(procs, store, proc, out, "proc", "the target to read /proc")   # no BAD line
