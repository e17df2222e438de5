"""A thread stopped inside an rseq critical section (zdtm's transition/rseq01): the stop
aborts the section, as a preemption would, in the process that goes on and in the one
restored from the image."""
from __future__ import annotations

import checkpointer
from ckpt_helpers import assert_unbroken, ok_lines
from test_ckpt_restore import run_until


def test_a_thread_stopped_inside_an_rseq_section_aborts_it(procs, store, binaries, tmp_path):
    out = tmp_path / "rseq.out"
    proc = procs.start([str(binaries / "rseq_section"), str(out)])
    run_until(out, 5)
    for n in range(3):      # the process goes on after each checkpoint, its section aborted
        checkpointer.checkpoint([proc.pid], store, f"img{n}")
        run_until(out, len(ok_lines(out)) + 3)
    procs.kill(proc)
    done = len(ok_lines(out))
    restored = checkpointer.restore(store, "img2")
    procs.restored.append(restored)
    run_until(out, done + 10)
    assert assert_unbroken(out, proc.pid) >= done + 10


def test_a_thread_whose_rseq_area_reads_empty_is_frozen_as_it_is(procs, binaries, tmp_path, monkeypatch):
    """A process already exiting when it is frozen has no memory left: reading its rseq area
    gives no bytes. The freeze leaves such a thread's registers as they are (the capture
    then finds the process gone) instead of failing with struct.error, which ended a group
    daemon whose group was being restored while a 100 Hz checkpoint froze it."""
    out = tmp_path / "rseq.out"
    proc = procs.start([str(binaries / "rseq_section"), str(out)])
    run_until(out, 5)
    monkeypatch.setattr(checkpointer.procfs, "read_memory", lambda pid, address, size: b"")
    with checkpointer.freeze([proc.pid]) as frozen:
        assert proc.pid in frozen.processes
    monkeypatch.undo()
    run_until(out, len(ok_lines(out)) + 3)      # and it goes on once let go
    assert assert_unbroken(out, proc.pid) >= 8
