"""Which FUSE mounts a restore's mount namespace lets go (checkpointer.unused_mounts): the
private ones its processes hold nothing of. A slave of a shared mount stays: the host's
unmount reaches it, and the processes keep the file system as the host sees it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

from checkpointer import unused_mounts
from checkpointer.mount_table import MountTable
from checkpointer.unused_mounts import unused_fuse
from polling import wait_for

# a namespace's root, a FUSE mount a process holds a file of, a private one, a slave one
# (master:7: shared on the host), and a private one below the slave
MOUNTINFO = """\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
20 1 0:40 / /srv/used rw - fuse.slsfs /srv/a rw
21 1 0:41 / /srv/private rw - fuse.slsfs /srv/b rw
22 1 0:42 / /srv/shared rw master:7 - fuse.slsfs /srv/c rw
23 22 0:43 / /srv/shared/inner rw - fuse.sshfs host: rw
"""


def test_only_private_fuse_mounts_nobody_uses_are_let_go(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    table = MountTable(str(tmp_path / "mountinfo"))
    assert [m for m, mount in table.mounts.items() if mount.slave] == [22]
    assert sorted(unused_fuse(table, ["/srv/used/file", "/"])) == [21, 23]


def test_what_the_processes_hold_is_not_read_when_no_fuse_mount_is_left_to_judge(tmp_path, monkeypatch):
    """The usual group restore: the group's own mount is the only private FUSE mount, and
    its directory is kept anyway; reading every process's fds and maps would change nothing."""
    (tmp_path / "mountinfo").write_text("".join(line + "\n" for line in MOUNTINFO.splitlines()
                                                if " /srv/private " not in line and "/srv/shared/" not in line))
    monkeypatch.setattr(unused_mounts, "MountTable", lambda _path: MountTable(str(tmp_path / "mountinfo")))

    def no_reads(pids):
        raise AssertionError(f"the fds and maps of {pids} were read")
    monkeypatch.setattr(unused_mounts, "held_paths", no_reads)
    namespace = SimpleNamespace(tid=os.getpid())     # (no call into it is made)
    assert unused_mounts.detach_unused_fuse(namespace, [os.getpid()], keep=["/srv/used"]) == []


def test_a_shared_mounts_copy_in_a_slave_namespace_is_read_as_a_slave(tmp_path):
    """The real kernel's mountinfo of `unshare --mount --propagation slave` (as the restore
    makes its namespace: MS_REC|MS_SLAVE) over a shared mount and a private one."""
    shared, private = tmp_path / "shared", tmp_path / "private"
    for point in (shared, private):
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "slsfs-test", str(point)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    try:
        inside = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "--fork", "--kill-child",
                                   "sleep", "60"])
        try:
            child = wait_for(lambda: (Path(f"/proc/{inside.pid}/task/{inside.pid}/children").read_text().split()
                                      or [None])[0], "unshare's child")
            wait_for(lambda: os.readlink(f"/proc/{child}/exe").endswith("/sleep"), "the child to run sleep")
            table = MountTable(f"/proc/{child}/mountinfo")
            by_point = {mount.point: mount for mount in table.mounts.values()}
            assert by_point[str(shared)].slave
            assert not by_point[str(private)].slave
        finally:
            inside.kill()
            inside.wait()
    finally:
        for point in (shared, private):
            subprocess.run(["umount", "-l", str(point)], check=False)
