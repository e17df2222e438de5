"""A restored group's mount namespace (made for the /proc of its PID namespace) is a copy of
every mount the host had; on a machine whose mounts are private (this one) an unmount on
the host does not reach it. The restore detaches the FUSE mounts its processes do not use
(checkpointer.unused_mounts): another store's `sls umount` returns at once, while the
mounts the group holds files of stay with it."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

from group_helpers import read_counter, wait_for
from slsfs.mount_namespaces import copies_elsewhere

# counts by path in its directory; keeps a file of another store's mount open and writes to it
HOLDER = """
import sys, time
held = open(sys.argv[1], "a")
n = 0
while True:
    n += 1
    with open("counter", "w") as f:
        f.write(str(n))
    held.write("x")
    held.flush()
    time.sleep(0.05)
"""


@contextmanager
def plain_mount(group_store, name: str):
    """Another store, mounted by `sls mount` at tmp/NAME.mnt; unmounted at the end."""
    store, mnt = group_store.path.parent / name, group_store.path.parent / f"{name}.mnt"
    mnt.mkdir()
    group_store.sls("init", str(store))
    group_store.sls("mount", str(store), str(mnt))
    try:
        yield mnt
    finally:
        if os.path.ismount(mnt):
            group_store.sls("umount", "--force", str(mnt), check=False)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False, capture_output=True)


def _device(path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def test_a_restored_group_keeps_no_other_stores_mount_it_does_not_use(group_store):
    """A process adopted by `sls persist` comes back under a stub PID 1, with a mount
    namespace of its own (restore._own_proc)."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "anchor", "--hz", "1", "--", "sleep", "infinity")
    with plain_mount(store, "used") as used, plain_mount(store, "other") as other:
        outsider = subprocess.Popen([sys.executable, "-c", HOLDER, str(used / "held")], cwd=store.mnt,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > 5, "the process to count")
            store.sls("persist", str(outsider.pid), "--store", str(store.path), "--name", "holder", "--hz", "5")
            store.checkpoint("holder")
            store.crash()
            outsider.wait(timeout=60)
            store.sls("restore", "holder", "--store", str(store.path))
            start = wait_for(lambda: read_counter(store.mnt / "counter"), "the restored process to count")
            wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > start + 5,
                     "the restored process to count on")

            assert copies_elsewhere(_device(other)) == []      # before: its namespace held a copy
            result = store.sls("umount", str(other))
            assert "namespace" not in result.stderr, result.stderr
            assert not os.path.ismount(other)

            assert copies_elsewhere(_device(used))             # the mount of a file it holds stays its own
            size = (used / "held").stat().st_size
            wait_for(lambda: (used / "held").stat().st_size > size, "the restored process to write its held file")
            store.sls("stop", "--store", str(store.path))
        finally:
            if outsider.poll() is None:
                outsider.kill()
                outsider.wait()
