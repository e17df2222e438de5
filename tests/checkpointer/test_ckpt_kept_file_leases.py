"""A file the capture keeps (written, or temporary) is read without opening it where the
holder's fd can read (our own dup of that fd, pread: no lease can break, its offset stays),
and opened again read-only only for a write-only fd (then only its own description can
hold a lease that would conflict, which its fdinfo shows). The lease itself, kept and taken
again, is test_ckpt_leases.py's; /proc/locks is never read."""
from __future__ import annotations

import os
import sys

from checkpointer import freeze
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


def _capture_holding(procs, tmp_path, mode: str) -> tuple[bytes, str]:
    """Capture the fds of a process holding tmp_path/held open with `mode` ("w" or "r"):
    (the contents kept for it, its fd's position line after the capture)."""
    held, ready = tmp_path / "held", tmp_path / "ready"
    if mode == "r":
        held.write_text("only read\n")
    proc = procs.start([sys.executable, "-c", HOLDER, mode, str(held), str(ready)])
    wait_for(ready.exists, "the target to open its file")
    blobs: list[bytes] = []
    files = FileCapture(lambda data: blobs.append(bytes(data)) or [str(len(blobs) - 1)])
    with freeze([proc.pid]):
        files.fd_records(proc.pid)
    record = next(record for record in files.files if record.get("path") == str(held))
    [fd] = [fd for fd in os.listdir(f"/proc/{proc.pid}/fd") if os.readlink(f"/proc/{proc.pid}/fd/{fd}") == str(held)]
    position = open(f"/proc/{proc.pid}/fdinfo/{fd}").read().splitlines()[0]
    return blobs[int(record["contents"][0])], position


def test_a_written_file_is_kept(procs, tmp_path):
    assert _capture_holding(procs, tmp_path, "w") == (b"written here\n", "pos:\t13")


def test_a_read_only_temporary_file_is_kept_and_its_offset_stays(procs, tmp_path):
    assert _capture_holding(procs, tmp_path, "r") == (b"only read\n", "pos:\t0")
