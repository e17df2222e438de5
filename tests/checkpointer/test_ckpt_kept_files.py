"""Small files outside any slsfs mount, held open (a compiler's temporary files): their
contents at the checkpoint are in the image, and a restore makes them again if they are
gone, so that the process's memory and its files agree; a big one is not kept, and its
absence is a clear error."""
from __future__ import annotations

import os
import shutil
import stat

import pytest

import checkpointer
from checkpointer import CheckpointError, load_image
from ckpt_helpers import assert_unbroken, ok_lines, wait_for

LINE = len("00000001 1234567 ok\n")


@pytest.fixture
def scratch(procs, store, tmp_path):
    """scratch_writer.py running in tmp_path/tmpdir, checkpointed as "scratch": (process,
    its output file, its directory)."""
    out, directory = tmp_path / "scratch.out", tmp_path / "tmpdir"
    directory.mkdir()
    proc = procs.python("scratch_writer.py", str(out), str(directory))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "20 lines")
    checkpointer.checkpoint([proc.pid], store, "scratch")
    return proc, out, directory


def test_a_scratch_file_gone_with_its_directory_is_made_again_as_it_was(procs, store, scratch):
    proc, out, directory = scratch
    files = {os.path.basename(f.get("path", "")): f for f in load_image(store, "scratch").files}
    assert "contents" in files["scratch"] and "contents" not in files["big"]
    procs.kill(proc)
    shutil.rmtree(directory / "work")       # the compiler's cleanup ran after the checkpoint
    size = out.stat().st_size
    restored = checkpointer.restore(store, "scratch")
    procs.restored.append(restored)
    assert any("scratch was gone" in w for w in restored.warnings), restored.warnings
    wait_for(lambda: out.stat().st_size >= size + 50 * LINE, "the restored process to write on")
    assert assert_unbroken(out, proc.pid) > size // LINE
    assert stat.S_IMODE((directory / "work" / "scratch").stat().st_mode) == 0o640
    assert stat.S_IMODE((directory / "work").stat().st_mode) == 0o700


def test_a_big_file_gone_is_named_in_the_error(procs, store, scratch):
    proc, _, directory = scratch
    procs.kill(proc)
    os.unlink(directory / "big")            # 2 MiB: not kept in the image
    with pytest.raises(CheckpointError, match="big"):
        procs.restored.append(checkpointer.restore(store, "scratch"))   # (killed at teardown if it ran)
