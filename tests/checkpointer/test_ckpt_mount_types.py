"""The file system types a capture looks up (which files' contents it keeps) are kept from
one checkpoint to the next (mounttypes.py) and read again when the process's mount table
changed: a file held in a tmpfs mounted between two checkpoints has its contents in the
second image, as it would with the table read afresh."""
from __future__ import annotations

import os
import subprocess
import sys

from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental
from ckpt_helpers import wait_for

TARGET = """
import os, sys, time
out = open(sys.argv[1], "w")
out.write("ready\\n"); out.flush()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
note = open(sys.argv[3], "w")
note.write("written in a tmpfs mounted after the first checkpoint\\n"); note.flush()
out.write("opened\\n"); out.flush()
time.sleep(600)
"""


def _kept(store, root) -> dict[str, bool]:
    return {os.path.basename(f.get("path", "")): "contents" in f for f in load_image(store, root).files}


def test_a_mount_made_between_two_checkpoints_is_seen_by_the_second(procs, store, tmp_path):
    out, go, mnt = tmp_path / "target.out", tmp_path / "go", tmp_path / "mnt"
    mnt.mkdir()
    proc = procs.start(["unshare", "-m", "--propagation", "private", sys.executable, "-c", TARGET,
                        str(out), str(go), str(mnt / "note")])
    wait_for(lambda: out.exists() and "ready" in out.read_text(), "the target to start")
    inc = Incremental()
    try:
        with freeze([proc.pid], tree=True) as frozen:
            first = inc.capture(frozen, store)
        assert _kept(store, first)["target.out"]        # its mount table was read (ext4 here, kept)
        subprocess.run(["nsenter", "-t", str(proc.pid), "-m", "mount", "-t", "tmpfs", "sls-test", str(mnt)],
                       check=True)
        go.touch()
        wait_for(lambda: "opened" in out.read_text(), "the target to open its file in the new tmpfs")
        with freeze([proc.pid], tree=True) as frozen:
            second = inc.capture(frozen, store)
    finally:
        inc.close()
    assert _kept(store, second) == {"target.out": True, "note": True, "null": False}
