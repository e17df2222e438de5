"""restore's `present_at`: a copy of a process restored on a copy of its directory (remap)
sees that copy where the original directory was, in a mount namespace of its own, so the
absolute paths it kept reach its own files; the original's are not touched."""
from __future__ import annotations

import os
import shutil

import checkpointer
from checkpointer import load_image
from checkpointer.restore import restore as restore_image
from ckpt_helpers import wait_for


def _lines(path) -> list[str]:
    return [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def test_a_copy_restored_elsewhere_keeps_to_its_own_files(procs, store, tmp_path):
    original, copy = tmp_path / "a", tmp_path / "b"
    original.mkdir()
    proc = procs.python("path_logger.py", "log", cwd=original)
    wait_for(lambda: (original / "log").exists() and len(_lines(original / "log")) > 5, "the target to log")
    checkpointer.checkpoint([proc.pid], store, "img", kill=True)    # its files as they were then: copied
    procs.kill(proc)
    shutil.copytree(original, copy)
    before = (original / "log").read_bytes()
    restored = restore_image(load_image(store, "img"), remap={str(original): str(copy)},
                             present_at=(str(copy), str(original)))
    procs.restored.append(restored)
    wait_for(lambda: len(_lines(copy / "log")) > before.count(b"\n") + 20, "the copy to log on in its directory")
    assert (original / "log").read_bytes() == before
    lines = _lines(copy / "log")
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(lines) + 1))
    assert {line.split()[1] for line in lines} == {str(original)}     # its getcwd(): the path it had
    assert os.readlink(f"/proc/{restored.pids[0]}/cwd") == str(original)
    # the restorer's own mount namespace did not change
    assert not any(f" {original} " in line for line in open("/proc/self/mountinfo"))
