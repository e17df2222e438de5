"""An fsync makes no commit when its file's every change is durable already
(mount.durable_points), and still waits for the disk whenever any change of the file is
not: sealed into a checkpoint that is not durable yet, or not sealed at all."""
from __future__ import annotations

import os

from mount_helpers import wait_for

ATTEMPTS = 20


def _fsync(path) -> None:
    """fsync `path` through a descriptor of its own: write-only for a file (an open for
    reading may stamp its atime: a change, which the fsync commits)."""
    fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unless_dirty(status: dict) -> dict | None:
    return None if status["dirty"] else status


def _point(status: dict) -> tuple:
    return status["head"], status["durable"], status["dirty"]


def test_an_fsync_of_a_file_durable_already_commits_nothing_whatever_else_changed(new_mount):
    mnt = new_mount("--checkpoint-interval", "0")         # commits only at fsyncs
    a_path, b_path = mnt.path / "a", mnt.path / "b"
    a = os.open(a_path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(a, b"a" * 1000)
        os.fsync(a)
        synced = mnt.status()
        assert synced["durable"] == synced["head"] and not synced["dirty"]

        b_path.write_bytes(b"b" * 1000)                    # its close hands it to the daemon
        assert mnt.status()["dirty"]
        os.fsync(a)                                        # nothing new in a: no commit
        assert _point(mnt.status()) == (synced["head"], synced["durable"], True)

        _fsync(mnt.path)                                   # the directory gained b: a commit
        dir_synced = mnt.status()
        assert _point(dir_synced) == (synced["head"] + 1, synced["head"] + 1, False)
        _fsync(b_path)                                     # b rode on the directory's commit
        assert _point(mnt.status()) == _point(dir_synced)

        os.write(a, b"A")
        os.fsync(a)                                        # a changed: a commit
        assert _point(mnt.status()) == (dir_synced["head"] + 1, dir_synced["head"] + 1, False)
    finally:
        os.close(a)
    mnt.kill()
    mnt.mount("--force")
    assert a_path.read_bytes() == b"a" * 1000 + b"A"
    assert b_path.read_bytes() == b"b" * 1000
    mnt.umount()


def test_an_fsync_of_a_file_in_a_checkpoint_not_durable_yet_waits_for_the_disk(new_mount):
    """A periodic checkpoint seals the file's change without making it durable (that
    comes about once a second): the fsync right after must still make it durable, here
    shown by the store's status and by a SIGKILL of the daemon at once."""
    mnt = new_mount("--checkpoint-interval", "10")
    path = mnt.path / "f"
    for attempt in range(ATTEMPTS):
        path.write_bytes(b"%d" % attempt * 500)           # its close hands it to the daemon
        sealed = wait_for(lambda: _unless_dirty(mnt.status()), "a periodic checkpoint of the file")
        if sealed["durable"] < sealed["head"]:            # (else the periodic barrier came first)
            break
    else:
        raise AssertionError(f"no checkpoint was left undurable in {ATTEMPTS} attempts")
    _fsync(path)
    assert mnt.status()["durable"] >= sealed["head"]
    mnt.kill()
    mnt.mount("--force")
    assert path.read_bytes() == b"%d" % attempt * 500
    mnt.umount()
