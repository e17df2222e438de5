"""File leases (F_SETLEASE; zdtm file_lease00) survive checkpoint, kill and restore, and a
checkpoint does not break them: reading a leased file's contents for the image would open
it, and the frozen holder could not give the lease up (the kernel takes it away after
lease-break-time, 45 s, and SIGIO kills a holder that does not catch it)."""
from __future__ import annotations

import os

import checkpointer
from checkpointer import load_image

from ckpt_helpers import ok_lines, restored_goes_on, wait_for


def test_read_and_write_leases_are_kept_and_held_again_after_restore(procs, store, tmp_path):
    out = tmp_path / "leases.out"
    proc = procs.python("lease_holder.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the leases to be taken")
    checkpointer.checkpoint([proc.pid], store, "leases")
    image = load_image(store, "leases")
    held = sorted(lock[:2] for fd in image.processes[0]["fds"] for lock in fd.get("locks", []))
    assert held == [["LEASE", "READ"], ["LEASE", "WRITE"]]
    size = out.stat().st_size
    wait_for(lambda: out.stat().st_size > size + 200, "the checkpointed process to go on")
    procs.kill(proc)
    restored_goes_on(procs, store, "leases", out)


def test_a_lease_that_cannot_be_taken_back_is_a_warning(procs, store, tmp_path):
    """A file open elsewhere at restore time (zdtm file_lease02: a lease being broken)
    cannot be leased again: the restore goes on, naming the lost lease."""
    out = tmp_path / "leases.out"
    proc = procs.python("lease_holder.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the leases to be taken")
    checkpointer.checkpoint([proc.pid], store, "leases")
    procs.kill(proc)
    with open(tmp_path / "write"):   # a write lease needs the file open nowhere else
        restored = checkpointer.restore(store, "leases")
        procs.restored.append(restored)
    assert any("write lease" in w and "could not be taken back" in w for w in restored.warnings), restored.warnings
    size = out.stat().st_size
    wait_for(lambda: out.stat().st_size > size + 200, "the restored process to go on")


def test_leases_being_broken_come_back_and_the_checkpoint_does_not_wait_for_them(procs, store, tmp_path):
    """Write leases other opens are breaking, on files their holder has open for writing
    (zdtm file_lease02). One being broken to read: the kernel refuses a read lease on a
    file open for writing, so the restore lost it ('could not be taken back'); now it is a
    write lease broken to read again, with no second break signal to the holder. One being
    broken to none: the checkpoint opened its file to keep its contents and waited for the
    break to end (lease-break-time, 45 s, the process frozen meanwhile); now it leaves it
    alone, and the break is still under way when the checkpoint is done."""
    out = tmp_path / "broken.out"
    proc = procs.python("broken_lease.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the leases to be broken")
    checkpointer.checkpoint([proc.pid], store, "broken")
    breaking = [line for fd in os.listdir(f"/proc/{proc.pid}/fdinfo")
                for line in open(f"/proc/{proc.pid}/fdinfo/{fd}").read().splitlines() if "LEASE" in line]
    assert len(breaking) == 2 and all("BREAKING" in line for line in breaking), breaking
    held = [lock[:2] for fd in load_image(store, "broken").processes[0]["fds"] for lock in fd.get("locks", [])]
    assert held == [["LEASE", "READ"]]
    procs.kill(proc)
    restored = restored_goes_on(procs, store, "broken", out)
    assert restored.warnings == []
