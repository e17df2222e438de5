"""fallocate(2) and lseek's SEEK_DATA/SEEK_HOLE on a mount (mount.extra_requests passes
them: pyfuse3 does not).

Every mode the kernel lets through to FUSE (allocate, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE)
is checked against the local disk (ext4) with the same random operations, byte for byte,
before and after a remount; SEEK_DATA/SEEK_HOLE must describe the file truly (no data
skipped, holes only where it reads zeros) and find a sparse file's data without reading
its holes.
"""
from __future__ import annotations

import errno
import os
import random

import pytest

from mount_helpers import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate, sls

BLOCK = 128 * 1024                    # the mount's block (mount.schema.BLOCK_SIZE)


def contents(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def assert_same_after_a_remount(mnt, path, expected: bytes) -> None:
    assert contents(path) == expected
    mnt.umount()
    mnt.mount()
    assert contents(path) == expected


def check_seek_describes(fd: int, data: bytes) -> None:
    """SEEK_DATA and SEEK_HOLE from offsets across the file: no data is skipped, and
    what they call a hole reads as zeros."""
    size = len(data)
    for offset in sorted({size - 1, *range(0, size, BLOCK // 3)} - {-1}):
        try:
            found = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            assert exc.errno == errno.ENXIO
            found = size
        assert offset <= found <= size and not data[offset:found].strip(b"\0"), (offset, found)
        hole = os.lseek(fd, offset, os.SEEK_HOLE)
        assert offset <= hole <= size, (offset, hole)
        if hole < size:
            try:
                after = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:
                after = size
            assert not data[hole:after].strip(b"\0"), (hole, after)
    assert_nothing_found(fd, size, -1, -(1 << 63))


def assert_nothing_found(fd: int, *offsets: int) -> None:
    """SEEK_DATA and SEEK_HOLE from each offset fail with ENXIO (past the end, or negative:
    not EIO, nor an offset)."""
    for offset in offsets:
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            with pytest.raises(OSError) as exc:
                os.lseek(fd, offset, whence)
            assert exc.value.errno == errno.ENXIO, (offset, whence)


def test_every_mode_does_what_it_does_on_the_local_disk(mnt, workdir):
    rng = random.Random(os.environ.get("SLSFS_FALLOCATE_SEED", "fallocate"))
    ours, theirs = mnt.path / "f", workdir / "reference"
    fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in (ours, theirs)]
    modes = [0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
             FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]
    try:
        for step in range(200):
            offset = rng.choice([0, BLOCK, 3 * BLOCK, rng.randrange(6 * BLOCK)]) + rng.choice([0, 0, 1, -1, 4096])
            offset = max(0, offset)
            length = rng.choice([1, 4096, BLOCK, 2 * BLOCK + 7, rng.randrange(1, 4 * BLOCK)])
            what = rng.choice(["write", "write", "write", "fallocate", "fallocate", "truncate"])
            if what == "write":
                payload = rng.randbytes(length)
                for fd in fds:
                    os.pwrite(fd, payload, offset)
            elif what == "truncate":
                for fd in fds:
                    os.ftruncate(fd, offset)
            else:
                mode = rng.choice(modes)
                for fd in fds:
                    fallocate(fd, mode, offset, length)
            assert os.fstat(fds[0]).st_size == os.fstat(fds[1]).st_size, (step, what)
            if step % 5 == 4:
                expected = contents(theirs)
                assert contents(ours) == expected, f"step {step} ({what})"
                check_seek_describes(fds[0], expected)
    finally:
        for fd in fds:
            os.close(fd)
    assert_same_after_a_remount(mnt, ours, contents(theirs))


def test_a_punched_range_frees_its_blocks_and_is_found_as_a_hole(mnt):
    path = mnt.path / "data"
    payload = os.urandom(16 * BLOCK)
    path.write_bytes(payload)
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
        before = os.fstat(fd).st_blocks * 512
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * BLOCK + 100, 8 * BLOCK)
        os.fsync(fd)
        st = os.fstat(fd)
        assert st.st_size == len(payload)
        assert before - st.st_blocks * 512 == 7 * BLOCK        # the 7 blocks wholly inside
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 5 * BLOCK
        assert os.lseek(fd, 5 * BLOCK, os.SEEK_DATA) == 12 * BLOCK
    finally:
        os.close(fd)
    assert_same_after_a_remount(mnt, path, payload[:4 * BLOCK + 100] + bytes(8 * BLOCK) + payload[12 * BLOCK + 100:])


def test_seek_finds_the_data_of_a_large_sparse_file_without_its_holes(mnt):
    path = mnt.path / "sparse"
    with open(path, "wb") as f:
        f.truncate(6 << 30)                          # over 4 GiB
        f.seek(5 << 30)
        f.write(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 5 << 30
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
        assert os.lseek(fd, 5 << 30, os.SEEK_HOLE) == (5 << 30) + BLOCK
        with pytest.raises(OSError) as exc:
            os.lseek(fd, (5 << 30) + BLOCK, os.SEEK_DATA)
        assert exc.value.errno == errno.ENXIO
    finally:
        os.close(fd)


def test_seek_from_a_negative_offset_finds_nothing_in_live_and_history_files(mnt):
    path = mnt.path / "short"
    path.write_bytes(b"data")
    sls("checkpoint", mnt.path)
    for name in (path, mnt.path / ".sls" / "latest" / "fs" / "short"):
        fd = os.open(name, os.O_RDONLY)
        try:
            assert os.lseek(fd, 0, os.SEEK_DATA) == 0
            assert_nothing_found(fd, -1, -4096, -(1 << 63))
        finally:
            os.close(fd)


def test_allocating_more_than_the_disk_holds_is_refused_and_changes_nothing(new_mount, small_disk):
    mnt = new_mount(root=small_disk / "m")
    path = mnt.path / "reserved"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)                      # glibc calls fallocate(2)
        assert os.fstat(fd).st_size == 1 << 20
        with pytest.raises(OSError) as exc:
            fallocate(fd, 0, 0, 1 << 30)
        assert exc.value.errno == errno.ENOSPC
        assert os.fstat(fd).st_size == 1 << 20
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 << 20)
        assert os.fstat(fd).st_size == 1 << 20
    finally:
        os.close(fd)
    assert contents(path) == bytes(1 << 20)


def test_what_df_shows_available_can_be_allocated_and_no_more(new_mount, small_disk):
    """statfs leaves out the space the mount keeps free (as ext4 leaves out root's): a
    program that sizes its preallocation by f_bavail (xfstests generic/103) gets it."""
    mnt = new_mount(root=small_disk / "m")
    fs = os.statvfs(mnt.path)
    available = fs.f_bavail * fs.f_frsize
    assert 0 < available < os.statvfs(small_disk).f_bavail * fs.f_frsize
    fd = os.open(mnt.path / "most", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as exc:
            fallocate(fd, 0, 0, available + (1 << 20))
        assert exc.value.errno == errno.ENOSPC
        fallocate(fd, 0, 0, available - (512 << 10))
        assert os.fstat(fd).st_size == available - (512 << 10)
    finally:
        os.close(fd)


def test_seek_sees_what_the_kernel_cache_still_holds_of_a_file_open_for_writing(mnt):
    """The kernel asks the daemon for SEEK_DATA/SEEK_HOLE without writing back its cached
    pages first: written data not sent yet must not be taken for a hole, nor its end for
    the end of the file."""
    path = mnt.path / "open"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(20):
            os.ftruncate(fd, 0)
            os.ftruncate(fd, 10 * BLOCK)
            os.pwrite(fd, b"x" * 100, 5 * BLOCK)
            assert os.lseek(fd, 0, os.SEEK_DATA) == 5 * BLOCK
            os.pwrite(fd, b"y" * 100, 12 * BLOCK)
            assert os.lseek(fd, 12 * BLOCK, os.SEEK_HOLE) == 12 * BLOCK + 100
            assert os.lseek(fd, 11 * BLOCK, os.SEEK_DATA) == 12 * BLOCK
    finally:
        os.close(fd)
