"""A --cwd group's temporary files are checkpointed with it: its TMPDIR is a directory of its
volume (when the mount point's path is short enough for Unix sockets under it). A script
that keeps a file in `mktemp` across a sleep, checked and removed after it, finds the file
again after a crash and a restore to a checkpoint taken inside that sleep (in the host's
/tmp, the original would have removed it after the checkpoint)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from group_helpers import GroupStore, wait_for

SCRIPT = """
i=0
while true; do
    i=$((i + 1))
    f=$(mktemp)
    echo "$i" > "$f"
    echo "$i wrote $f"
    sleep 0.6
    [ "$(cat "$f" 2>&1)" = "$i" ] || echo "BAD $i: $f holds '$(cat "$f" 2>&1)'"
    rm -f "$f"
done
"""


@pytest.fixture
def short_store(short_tmp):
    """A group store at a short path (short_tmp/XXXXXXXX/store): a long mount point keeps
    the host's /tmp as TMPDIR (Unix socket paths made under it would be too long)."""
    root = Path(tempfile.mkdtemp(dir=short_tmp))
    store = GroupStore(root)
    try:
        yield store
    finally:
        store.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def test_a_temporary_file_of_a_cwd_group_comes_back_with_it(short_store):
    store = short_store
    out = store.path / "group-tmp.out"
    store.sls("run", "--store", str(store.path), "--name", "tmp", "--hz", "0", "--", "/bin/sh", "-c", SCRIPT)
    wait_for(lambda: out.exists() and " wrote " in out.read_text(), "the script to write its first file")
    first = out.read_text().splitlines()[0]
    assert f" wrote {store.mnt}/.sls-tmp/tmp." in first, first     # its TMPDIR is in the volume
    lines = len(out.read_text().splitlines())
    wait_for(lambda: len(out.read_text().splitlines()) > lines, "a new file to be written")
    store.checkpoint("tmp")          # inside the 0.6 s the file exists, not open
    time.sleep(1.5)                  # the original removes it, and goes on
    store.crash()
    store.sls("restore", "tmp", "--store", str(store.path))
    done = len(out.read_text().splitlines())
    wait_for(lambda: len(out.read_text().splitlines()) >= done + 3, "the restored script to go on")
    assert "BAD" not in out.read_text(), out.read_text()[-500:]
