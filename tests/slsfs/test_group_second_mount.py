"""A second `sls mount` of a store whose group daemon runs is a bind mount of the group's
mount (mount-layer tests: tests/mount/test_second_mount.py); `sls umount` of it unmounts
that one alone and leaves the daemon and its groups running: it refused ("persistence
groups run in ...") and, with --force, would have stopped them."""
from __future__ import annotations

import os
import subprocess
import sys



def test_a_second_mount_of_a_group_store_unmounts_alone(group_store, tmp_path):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "loop", "--hz", "2", "--",
              sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)")
    second = tmp_path / "second"
    second.mkdir()
    try:
        store.sls("mount", str(store.path), str(second))
        assert os.stat(second).st_dev == os.stat(store.mnt).st_dev
        (second / "through-second").write_text("one file system")
        assert (store.mnt / "through-second").read_text() == "one file system"
        done = store.sls("umount", str(second))
        assert "goes on serving" in done.stdout, done.stdout
        assert store.group("loop")["running"]
    finally:
        subprocess.run(["umount", "-l", str(second)], capture_output=True)
    store.sls("stop", "--store", str(store.path))
