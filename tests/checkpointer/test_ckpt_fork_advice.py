"""What a fork does with a mapping (zdtm maps11): memory under MADV_WIPEONFORK comes back
empty in a child forked after a restore (a library's random-number state must not be shared
by parent and child: OpenSSL, BoringSSL, LibreSSL), memory under MADV_DONTFORK is not in
such a child at all, and MAP_DROPPABLE memory (glibc's getrandom state) is empty after a
restore, as the kernel may leave it at any time: two processes restored from one image must
not draw the same random numbers from it."""
from __future__ import annotations

import pytest

import checkpointer
from checkpointer import load_image

from ckpt_helpers import assert_unbroken, ok_lines, wait_for


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_a_fork_after_a_restore_wipes_and_leaves_out_what_the_program_asked(procs, store, binaries, tmp_path, lazy):
    out = tmp_path / "advice.out"
    proc = procs.start([str(binaries / "fork_advice"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to fork and check")
    checkpointer.checkpoint([proc.pid], store, "advice")
    flags = sorted(tuple(sorted(v["vm_flags"])) for v in load_image(store, "advice").processes[0]["vmas"]
                   if "vm_flags" in v)
    assert flags == [("dontfork",), ("droppable", "wipeonfork"), ("wipeonfork",)]
    procs.kill(proc)
    before = len(ok_lines(out))
    procs.restored.append(checkpointer.restore(store, "advice", lazy=lazy))
    wait_for(lambda: len(ok_lines(out)) >= before + 20 or "BAD" in out.read_text(), "the restored target to fork")
    assert assert_unbroken(out, proc.pid) >= before + 20   # (no BAD line: every child saw what it must)
    states = [line.split()[2] for line in ok_lines(out)]
    assert states[0] == "kept", "the droppable page was empty before any checkpoint"
    assert set(states[before:]) == {"empty"}, "the droppable page came back with its old contents"
