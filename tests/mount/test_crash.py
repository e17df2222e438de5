"""Crash safety: SIGKILL the mount daemon mid-writes, stale mount points, busy umount."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from mount_helpers import is_mounted, pid_alive, sls, wait_for

WRITER = r"""
import os, sys
root = sys.argv[1]
n = 0
while True:
    path = os.path.join(root, f"file-{n:05d}")
    with open(path, "wb") as f:
        f.write(os.urandom(1000) + n.to_bytes(4, "big") * 5000)
        if n % 3 == 0:
            f.flush()
            os.fsync(f.fileno())
            print(n, flush=True)          # fsync acknowledged: this file must survive
    n += 1
"""


def test_sigkill_mid_writes_keeps_every_fsynced_byte(new_mount, workdir):
    mnt = new_mount()
    (mnt.path / "dir").mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt.path / "dir")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    acknowledged: list[int] = []
    contents: dict[int, bytes] = {}
    try:
        while len(acknowledged) < 30:
            line = writer.stdout.readline()
            assert line, "writer stopped early"
            n = int(line)
            acknowledged.append(n)
            contents[n] = (mnt.path / "dir" / f"file-{n:05d}").read_bytes()
        mnt.kill()                                     # crash while the writer runs
    finally:
        writer.kill()
        writer.wait()
    mnt.mount()                                        # replaces its own stale mount
    for n in acknowledged:
        assert (mnt.path / "dir" / f"file-{n:05d}").read_bytes() == contents[n]
    mnt.umount()
    fsck = json.loads(sls("fsck", mnt.store, "--json").stdout)
    assert fsck["clean"], fsck["problems"]


def test_a_stale_mount_of_another_store_is_replaced_only_with_force(new_mount):
    first, second = new_mount(), new_mount()
    second.umount()
    first.kill()
    refused = sls("mount", second.store, first.path, check=False)
    assert refused.returncode == 1
    assert "stale mount of another store" in refused.stderr and str(first.store) in refused.stderr
    assert "--force" in refused.stderr
    with pytest.raises(OSError) as stale:
        os.statvfs(first.path)                         # left as it was
    assert stale.value.errno == errno.ENOTCONN
    second.path = first.path
    second.mount("--force")
    assert os.statvfs(first.path).f_namemax == 255
    second.umount()


def test_unlinked_open_file_survives_a_crash_held_by_the_store(mnt):
    path = mnt.path / "scratch"
    f = open(path, "w+b")
    try:
        f.write(b"precious")
        f.flush()
        ino = os.fstat(f.fileno()).st_ino
        os.unlink(path)
        os.fsync(f.fileno())
        mnt.kill()
    finally:
        try:
            f.close()
        except OSError:
            pass
    sls("umount", mnt.path)                            # a stale mount: detached
    with mnt.open_store() as store:
        assert "slsfs-mount" in store.holders("main").get(ino, set())
        from mount import schema
        assert store.volume("main").get(schema.inode_key(ino)) is not None
    mnt.mount()                                        # still held after a remount
    mnt.umount()                                       # a clean stop releases it
    with mnt.open_store() as store:
        assert store.holders("main") == {}


def test_umount_refuses_while_files_are_open(mnt):
    (mnt.path / "busy").write_text("x")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys,time; f=open(sys.argv[1]); print('ok', flush=True); time.sleep(300)",
                               str(mnt.path / "busy")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        result = sls("umount", mnt.path, check=False)
        assert result.returncode == 1
        assert "busy" in result.stderr and f"pid {holder.pid}" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    wait_for(lambda: sls("umount", mnt.path, check=False).returncode == 0, "umount to succeed", 30)


@pytest.fixture
def namespace_copy(mnt):
    """A process in a mount namespace of its own (`unshare --mount`, private propagation, as
    a container or a PrivateTmp service has) made while `mnt` is mounted: it holds a copy of
    the mount, which an unmount outside does not reach. Killed at the end."""
    holder = subprocess.Popen(["unshare", "--mount", "--", sys.executable, "-c",
                               "import time; print('ok', flush=True); time.sleep(300)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_umount_of_a_mount_copied_into_another_namespace_says_so_and_waits_for_it(mnt, namespace_copy):
    """The unmount names the namespace holding the daemon's file system at once, and ends
    once that namespace lets it go: the daemon's final checkpoint then holds every write.
    Before: it waited without a word and then blamed the final checkpoint."""
    (mnt.path / "kept").write_text("written before the unmount")
    umount = subprocess.Popen([sys.executable, "-m", "slsfs.cli", "umount", str(mnt.path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = umount.stderr.readline()
        assert "other mount namespaces" in said and f"pid {namespace_copy.pid}" in said, said
        assert pid_alive(mnt.pid)                      # still serving the copy
        namespace_copy.kill()
        namespace_copy.wait()
        out, err = umount.communicate(timeout=120)
    finally:
        umount.kill()
        umount.wait()
    assert umount.returncode == 0 and "unmounted" in out, (out, err)
    assert not is_mounted(mnt.path) and not pid_alive(mnt.pid)
    mnt.mount()
    assert (mnt.path / "kept").read_text() == "written before the unmount"


def test_umount_force_stops_a_daemon_whose_mount_another_namespace_holds(mnt, namespace_copy):
    (mnt.path / "kept").write_text("written before the unmount")
    sls("umount", "--force", mnt.path)     # before: waited UMOUNT_TIMEOUT_S for a daemon serving on, then failed
    assert not is_mounted(mnt.path)
    assert not pid_alive(mnt.pid)          # its final checkpoint written, it exited
    with mnt.open_store() as store:
        assert store.holders("main") == {}
    mnt.mount()
    assert (mnt.path / "kept").read_text() == "written before the unmount"


def test_periodic_checkpoints_without_fsync(new_mount):
    mnt = new_mount("--checkpoint-interval", "10")
    before = mnt.status()["checkpoints_taken"]
    (mnt.path / "f").write_bytes(b"not fsynced")
    # a periodic checkpoint after the write with nothing left unsealed holds the whole
    # write; then wait for that checkpoint (not a later one) to be durable
    sealed = wait_for(lambda: (s := mnt.status())["checkpoints_taken"] > before
                      and not s["dirty"] and s, "a periodic checkpoint of the write", 30)
    wait_for(lambda: mnt.status()["durable"] >= sealed["head"],
             f"periodic checkpoint {sealed['head']} to become durable", 30)
    mnt.kill()
    time.sleep(0.1)
    mnt.mount("--force")
    assert (mnt.path / "f").read_bytes() == b"not fsynced"


def test_corrupt_chunk_gives_eio_on_that_file_only(mnt):
    damaged, healthy = os.urandom(50_000), os.urandom(50_000)
    (mnt.path / "damaged").write_bytes(damaged)
    (mnt.path / "healthy").write_bytes(healthy)
    mnt.umount()
    marker = damaged[20_000:20_064]                     # random bytes are stored uncompressed
    hits = []
    for pack in (mnt.store / "packs").rglob("*.pack"):
        data = pack.read_bytes()
        if marker in data:
            hits.append((pack, data.index(marker)))
    assert len(hits) == 1, hits
    pack, offset = hits[0]
    with open(pack, "r+b") as f:
        f.seek(offset)
        f.write(bytes([marker[0] ^ 0xFF]))
    mnt.mount()
    with pytest.raises(OSError) as e:
        (mnt.path / "damaged").read_bytes()
    assert e.value.errno == errno.EIO
    assert (mnt.path / "healthy").read_bytes() == healthy
    (mnt.path / "new").write_bytes(b"still writable")
    assert (mnt.path / "new").read_bytes() == b"still writable"
    assert "file /damaged (inode" in (mnt.store / "mount.log").read_text()   # logged with its path


def test_umount_of_a_bind_mount_leaves_the_daemon_serving_the_other(mnt, tmp_path):
    """`sls umount` of one of two mounts of the same daemon (a bind mount, as xfstests and
    containers make) unmounts that one at once and says the daemon goes on: it waited 120 s
    for the daemon to exit and failed with 'still writing its final checkpoint'."""
    (mnt.path / "kept").write_text("still here")
    other = tmp_path / "bound"
    other.mkdir()
    subprocess.run(["mount", "--bind", str(mnt.path), str(other)], check=True)
    try:
        result = sls("umount", other, check=False)
        assert result.returncode == 0 and "goes on serving" in result.stdout, result
        assert not is_mounted(other)
        assert (mnt.path / "kept").read_text() == "still here"
    finally:
        subprocess.run(["umount", "-l", str(other)], check=False, capture_output=True)
    mnt.umount()
