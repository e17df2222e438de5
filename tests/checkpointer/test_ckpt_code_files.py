"""A restore refuses a program whose file was replaced since the checkpoint (an upgrade, a
rebuild): its code would be read from the new file at the old addresses. The same file, put
back as it was, restores."""
from __future__ import annotations

import os
import shutil

import pytest

import checkpointer
from checkpointer import load_image
from checkpointer.errors import CheckpointError
from ckpt_helpers import ok_lines, restored_goes_on, wait_for


def test_a_program_replaced_since_the_checkpoint_is_refused_and_the_same_file_restores(
        procs, store, binaries, tmp_path):
    program = tmp_path / "counter"
    shutil.copy2(binaries / "counter", program)
    out = tmp_path / "counter.out"
    proc = procs.start([str(program), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the counter to count")
    checkpointer.checkpoint([proc.pid], store, "img")
    procs.kill(proc)
    original = program.stat()
    code = [vma for vma in load_image(store, "img").processes[0]["vmas"]
            if vma["path"] == str(program) and "x" in vma["prot"]]
    assert code and code[0]["file_id"] == [original.st_size, original.st_mtime_ns]

    rebuilt = tmp_path / "counter.new"          # replaced as a package upgrade does: a rename
    shutil.copy(program, rebuilt)               # (its mode, a new mtime)
    os.replace(rebuilt, program)
    with pytest.raises(CheckpointError, match=r"counter, whose code process .* is not the file it was"):
        procs.restored.append(checkpointer.restore(store, "img"))   # (killed at teardown if it ran)

    os.utime(program, ns=(original.st_atime_ns, original.st_mtime_ns))   # the same file again
    restored_goes_on(procs, store, "img", out)
