"""A store and a mount point whose paths hold what a user's may: spaces, non-ASCII
letters, a comma, a backslash. The kernel lists them escaped in mountinfo, and libfuse
takes its options as comma-separated ASCII: `sls` must still find the mount's store. A
store deeper than an AF_UNIX address holds (107 bytes) still gets its control socket."""
from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from mount.control import find_mount, slsfs_mounts
from mount_helpers import sls


@pytest.mark.parametrize("store_name, mnt_name", [("my store, ü", "mnt"), ("store", "mnt é\\x"),
                                                  ("/".join(["deep" * 10] * 3) + "/store", "mnt")],
                         ids=["comma and letter", "space and backslash", "longer than a unix socket address"])
def test_mount_checkpoint_and_umount_with_odd_paths(workdir, store_name, mnt_name):
    store, mnt = workdir / store_name, workdir / mnt_name
    mnt.mkdir()
    created = sls("init", store)
    assert f"sls mount {shlex.quote(str(store))} MNT" in created.stdout    # to copy into a shell
    try:
        sls("mount", store, mnt)
        (mnt / "f").write_text("kept")
        info, rel = find_mount(str(mnt / "f"))
        assert (info.mountpoint, info.store, rel) == (str(mnt), str(store), "f")
        assert os.stat(mnt).st_dev == os.makedev(*map(int, info.device.split(":")))
        sls("checkpoint", mnt, "--name", "odd")
        assert "odd" in sls("log", mnt).stdout
        sls("umount", mnt)
        assert not os.path.ismount(mnt)
        assert not any(m.mountpoint == str(mnt) for m in slsfs_mounts())
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
