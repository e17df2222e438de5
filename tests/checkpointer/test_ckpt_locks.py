"""File locks survive checkpoint, kill and restore: a process holding a flock (shared with
its child), POSIX record locks and an OFD lock is restored holding them all (another
process cannot take them), and a restore whose lock another process took meanwhile fails
with a clear error."""
from __future__ import annotations

import fcntl
import struct

import pytest

import checkpointer
from checkpointer import load_image

from ckpt_helpers import children_of, ok_lines, restored_goes_on, wait_for

F_OFD_SETLK = 37


def takeable(path, kind: str) -> bool:
    """Whether this process can take the lock `kind` ("flock", "posix10", "posix100", "ofd") now."""
    with open(path, "r+") as f:
        try:
            if kind == "flock":
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif kind == "ofd":
                fcntl.fcntl(f, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
            else:  # a read lock: conflicts only with the holder's write lock on bytes 10-19
                start = 15 if kind == "posix10" else 50
                fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, start)
            return True
        except BlockingIOError:
            return False


def test_locks_are_held_again_after_restore(procs, store, tmp_path, subreaper):
    out = tmp_path / "locks.out"
    proc = procs.python("lock_holder.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the locks to be taken")
    [child] = children_of(proc.pid)
    assert not takeable(tmp_path / "flock", "flock") and not takeable(tmp_path / "ofd", "ofd")
    assert not takeable(tmp_path / "posix", "posix10") and takeable(tmp_path / "posix", "posix100")
    checkpointer.checkpoint([proc.pid], store, "locks", tree=True)
    image = load_image(store, "locks")
    held = sorted(lock[0] for p in image.processes for fd in p.get("fds", []) for lock in fd.get("locks", []))
    # flock and OFD locks belong to the file description, which the child shares
    assert held == ["FLOCK", "FLOCK", "OFDLCK", "OFDLCK", "POSIX", "POSIX"]
    procs.kill(proc)
    subreaper([child])
    assert takeable(tmp_path / "flock", "flock") and takeable(tmp_path / "posix", "posix10")
    restored_goes_on(procs, store, "locks", out)
    assert not takeable(tmp_path / "flock", "flock"), "the flock was not taken back"
    assert not takeable(tmp_path / "ofd", "ofd"), "the OFD lock was not taken back"
    assert not takeable(tmp_path / "posix", "posix10"), "the POSIX write lock was not taken back"
    assert takeable(tmp_path / "posix", "posix100"), "a read lock became a write lock"


def test_a_lock_taken_meanwhile_makes_the_restore_fail_clearly(procs, store, tmp_path, subreaper):
    out = tmp_path / "locks.out"
    proc = procs.python("lock_holder.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the locks to be taken")
    [child] = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, "locks", tree=True)
    procs.kill(proc)
    subreaper([child])
    with open(tmp_path / "flock", "r+") as intruder:
        fcntl.flock(intruder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(checkpointer.CheckpointError, match="flock.*another process holds it"):
            procs.restored.append(checkpointer.restore(store, "locks"))
