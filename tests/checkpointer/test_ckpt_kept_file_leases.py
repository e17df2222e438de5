"""A file the capture keeps (written, or temporary) is read only when no lease would break,
and an fd open for writing is checked for one by its own fdinfo alone: a write lease
exists while another description is open for writing only if that description holds it
(the lease itself is test_ckpt_zdtm_leases.py's). /proc/locks, whose every read waits for
an RCU grace period (7-16 ms here, inside the stop), is read for read-only fds only."""
from __future__ import annotations

import sys

from checkpointer import freeze, locks
from checkpointer.files import FileCapture

from ckpt_helpers import wait_for

HOLDER = """import sys, time
held = open(sys.argv[2], sys.argv[1])
if sys.argv[1] == "w":
    held.write("written here\\n")
    held.flush()
open(sys.argv[3], "w").close()
time.sleep(600)
"""


def _capture_holding(procs, tmp_path, monkeypatch, mode: str) -> tuple[bytes, int]:
    """Capture the fds of a process holding tmp_path/held open with `mode` ("w" or "r"):
    (the contents kept for it, the reads of /proc/locks)."""
    held, ready = tmp_path / "held", tmp_path / "ready"
    if mode == "r":
        held.write_text("only read\n")
    proc = procs.start([sys.executable, "-c", HOLDER, mode, str(held), str(ready)])
    wait_for(ready.exists, "the target to open its file")
    lease_checks: list[int] = []
    monkeypatch.setattr(locks, "leased_files", lambda: lease_checks.append(1) or set())
    blobs: list[bytes] = []
    files = FileCapture(lambda data: blobs.append(bytes(data)) or [str(len(blobs) - 1)])
    with freeze([proc.pid]):
        files.fd_records(proc.pid)
    record = next(record for record in files.files if record.get("path") == str(held))
    return blobs[int(record["contents"][0])], len(lease_checks)


def test_a_written_file_is_kept_without_reading_proc_locks(procs, tmp_path, monkeypatch):
    assert _capture_holding(procs, tmp_path, monkeypatch, "w") == (b"written here\n", 0)


def test_a_read_only_temporary_file_is_kept_after_reading_proc_locks(procs, tmp_path, monkeypatch):
    assert _capture_holding(procs, tmp_path, monkeypatch, "r") == (b"only read\n", 1)
