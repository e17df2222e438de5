"""POSIX behaviour of a live slsfs mount, as root (permission cases: test_permissions.py)."""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import subprocess
import time

import pytest

from file_handles import file_handle, open_by_handle
from mount_helpers import sls

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4


def renameat2(old, new, flags: int) -> None:
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def test_write_read_and_persist_across_remount(mnt):
    data = os.urandom(3 * 1024 * 1024 + 123)
    (mnt.path / "f").write_bytes(data)
    (mnt.path / "d" / "e").mkdir(parents=True)
    (mnt.path / "d" / "e" / "small").write_bytes(b"x")
    assert (mnt.path / "f").read_bytes() == data
    mnt.umount()
    mnt.mount()
    assert (mnt.path / "f").read_bytes() == data
    assert (mnt.path / "d" / "e" / "small").read_bytes() == b"x"


def test_overwrite_middle_of_blocks(mnt):
    path = mnt.path / "f"
    base = bytearray(os.urandom(400_000))
    path.write_bytes(base)
    with open(path, "r+b") as f:
        for off, chunk in ((5, b"a" * 10), (131070, b"b" * 7), (300_000, b"c" * 150_000)):
            f.seek(off)
            f.write(chunk)
            base[off:off + len(chunk)] = chunk
    assert path.read_bytes() == bytes(base)


def test_sparse_file_over_4gib_reads_zeros_in_holes(mnt):
    path = mnt.path / "sparse"
    with open(path, "wb") as f:
        f.seek(5 * 2**30)
        f.write(b"tail")
        f.seek(2**20)
        f.write(b"head")
    assert path.stat().st_size == 5 * 2**30 + 4
    with open(path, "rb") as f:
        f.seek(5 * 2**30 - 10)
        assert f.read(14) == b"\0" * 10 + b"tail"
        f.seek(2**20 - 3)
        assert f.read(10) == b"\0\0\0head\0\0\0"
        f.seek(3 * 2**30)
        assert f.read(4096) == b"\0" * 4096


def test_truncate_shrink_then_grow_shows_zeros(mnt):
    path = mnt.path / "t"
    path.write_bytes(b"z" * 300_000)
    os.truncate(path, 140_000)
    os.truncate(path, 200_000)
    data = path.read_bytes()
    assert data == b"z" * 140_000 + b"\0" * 60_000
    with open(path, "r+b") as f:          # O_TRUNC goes through setattr(size=0)
        pass
    with open(path, "wb") as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"


def test_directories_and_entries(mnt):
    d = mnt.path / "dir"
    d.mkdir()
    assert os.stat(d).st_nlink == 2
    (d / "sub").mkdir()
    assert os.stat(d).st_nlink == 3
    (d / "file").write_text("x")
    assert sorted(os.listdir(d)) == ["file", "sub"]
    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        os.mkdir(d / "sub")
    with pytest.raises(NotADirectoryError):
        os.rmdir(d / "file")
    with pytest.raises(IsADirectoryError):
        os.unlink(d / "sub")
    os.rmdir(d / "sub")
    os.unlink(d / "file")
    os.rmdir(d)
    assert not d.exists()


def test_readdir_large_directory_stable_while_changing(mnt):
    d = mnt.path / "big"
    d.mkdir()
    names = {f"entry-{i:05d}" for i in range(3000)}
    for name in names:
        (d / name).touch()
    assert set(os.listdir(d)) == names
    seen = []
    with os.scandir(d) as it:
        for i, entry in enumerate(it):
            seen.append(entry.name)
            if i % 100 == 0:                      # entries come and go during the listing
                (d / f"new-{i}").touch()
                os.unlink(d / f"new-{i}")
    assert sorted(seen) == sorted(names)
    assert len(seen) == len(set(seen))


def test_names_up_to_255_bytes(mnt):
    ok = mnt.path / ("n" * 255)
    ok.write_text("x")
    assert ok.read_text() == "x"
    with pytest.raises(OSError) as e:
        (mnt.path / ("n" * 256)).write_text("x")
    assert e.value.errno == errno.ENAMETOOLONG


def test_deep_path(mnt):
    path = mnt.path
    for i in range(60):
        path = path / f"level{i:02d}"
    path.mkdir(parents=True)
    (path / "leaf").write_text("deep")
    assert (path / "leaf").read_text() == "deep"


def test_symlinks_and_hard_links(mnt):
    target = mnt.path / "target"
    target.write_text("content")
    os.symlink("target", mnt.path / "link")
    assert os.readlink(mnt.path / "link") == "target"
    assert (mnt.path / "link").read_text() == "content"
    assert stat.S_ISLNK(os.lstat(mnt.path / "link").st_mode)
    os.link(target, mnt.path / "hard")
    assert os.stat(target).st_nlink == 2
    assert os.stat(target).st_ino == os.stat(mnt.path / "hard").st_ino
    (mnt.path / "hard").write_text("changed")
    assert target.read_text() == "changed"
    os.unlink(target)
    assert os.stat(mnt.path / "hard").st_nlink == 1
    with pytest.raises(PermissionError):
        os.link(mnt.path, mnt.path / "dirlink")


def test_rename_replace_noreplace_exchange(mnt):
    a, b = mnt.path / "a", mnt.path / "b"
    a.write_text("A")
    b.write_text("B")
    with pytest.raises(FileExistsError):
        renameat2(a, b, RENAME_NOREPLACE)
    renameat2(a, b, RENAME_EXCHANGE)
    assert a.read_text() == "B" and b.read_text() == "A"
    os.rename(a, b)                                   # atomic replace
    assert not a.exists() and b.read_text() == "B"
    (mnt.path / "d1").mkdir()
    (mnt.path / "d2" / "x").mkdir(parents=True)
    with pytest.raises(OSError) as e:
        os.rename(mnt.path / "d1", mnt.path / "d2")
    assert e.value.errno == errno.ENOTEMPTY
    os.rename(mnt.path / "d2" / "x", mnt.path / "d1" / "moved")
    assert os.stat(mnt.path / "d1").st_nlink == 3 and os.stat(mnt.path / "d2").st_nlink == 2
    with pytest.raises(NotADirectoryError):
        os.rename(mnt.path / "d1", b)
    with pytest.raises(IsADirectoryError):
        os.rename(b, mnt.path / "d2")


def test_a_time_beyond_2262_is_clamped_and_the_mount_lives_on(mnt):
    """utimensat to 2446 (ext4's last second; xfstests generic/634) goes past what an inode
    record holds (signed 64-bit ns): it is clamped, as a kernel file system clamps to its
    range. Before, the next checkpoint failed to encode the inode and the daemon stopped."""
    path = mnt.path / "f"
    path.write_text("x")
    latest = (1 << 63) - 1
    os.utime(path, ns=(15032385535 * 10**9, 15032385535 * 10**9))
    assert os.stat(path).st_atime_ns == latest     # (the kernel shows its own mtime until it
    sls("checkpoint", mnt.path)                    # forgets the inode: writeback cache)
    mnt.umount()
    mnt.mount()
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (latest, latest)
    os.utime(path, ns=(-(2**31) * 10**9, 0))          # 1901: representable, kept
    sls("checkpoint", mnt.path)
    mnt.umount()
    mnt.mount()
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (-(2**31) * 10**9, 0)


def test_a_file_handle_opens_the_file_after_a_remount(mnt):
    """open_by_handle_at of a handle taken before the kernel forgot the inode (here: another
    mount of the store; xfstests generic/426, 467, 477 drop the caches) asks the daemon for
    "." in it (export support); before, every such handle gave ESTALE. A file unlinked
    since is gone: ESTALE, as on ext4."""
    (mnt.path / "d").mkdir()
    (mnt.path / "d" / "kept").write_bytes(b"still here")
    (mnt.path / "gone").write_bytes(b"x")
    kept, gone = file_handle(mnt.path / "d" / "kept"), file_handle(mnt.path / "gone")
    (mnt.path / "gone").unlink()
    mnt.umount()
    mnt.mount()
    fd = open_by_handle(mnt.path, kept)
    try:
        assert os.read(fd, 100) == b"still here"
    finally:
        os.close(fd)
    with pytest.raises(OSError) as exc:
        os.close(open_by_handle(mnt.path, gone))
    assert exc.value.errno == errno.ESTALE


def test_readdir_lists_dot_and_dotdot_first(mnt):
    """ls -a (and getdents, xfstests generic/401 and 471) sees "." and ".." as directories
    first, in the live tree, a subdirectory and the hidden .sls tree; before, they were
    missing from every listing."""
    (mnt.path / "sub").mkdir()
    (mnt.path / "sub" / "f").write_text("x")
    many = mnt.path / "many"                  # a listing longer than one readdir reply
    many.mkdir()
    for i in range(600):
        (many / f"entry-{i:04d}-{'n' * 40}").touch()
    for directory in (mnt.path, mnt.path / "sub", mnt.path / ".sls", many):
        listing = subprocess.run(["ls", "-1afF", str(directory)], capture_output=True, text=True,
                                 check=True).stdout.split()
        assert listing[:2] == ["./", "../"], directory
        assert listing.count("./") == 1 and listing.count("../") == 1
        assert sorted(name.rstrip("/@") for name in listing[2:]) == sorted(os.listdir(directory))

def test_rename_whiteout_leaves_a_character_device_0_0(mnt):
    """renameat2(RENAME_WHITEOUT), as overlayfs does on its upper layer (xfstests
    generic/078): the old name becomes a character device 0/0, kept like any other node;
    before, the flag was ignored and the old name was left empty."""
    (mnt.path / "d").mkdir()
    a, b, replaced = mnt.path / "a", mnt.path / "d" / "b", mnt.path / "d" / "old"
    a.write_bytes(b"moved")
    replaced.write_bytes(b"replaced")
    renameat2(a, b, RENAME_WHITEOUT)
    with pytest.raises(FileExistsError):        # a refused rename leaves no whiteout
        renameat2(b, replaced, RENAME_WHITEOUT | RENAME_NOREPLACE)
    assert b.read_bytes() == b"moved"
    renameat2(b, replaced, RENAME_WHITEOUT)
    mnt.umount()
    mnt.mount()
    for whiteout in (a, b):
        st = os.lstat(whiteout)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert replaced.read_bytes() == b"moved"
    assert sorted(os.listdir(mnt.path / "d")) == ["b", "old"]


def test_chmod_chown_utimens_update_ctime(mnt):
    path = mnt.path / "f"
    path.write_text("x")
    before = os.stat(path)
    time.sleep(0.01)
    os.chmod(path, 0o4751)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o4751 and st.st_ctime_ns > before.st_ctime_ns
    os.chown(path, 1234, 5678)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(path, ns=(1_000_000_000_123, 2_000_000_000_456))
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)
    mtime = st.st_mtime_ns
    time.sleep(0.01)
    with open(path, "ab") as f:
        f.write(b"more")
    assert os.stat(path).st_mtime_ns > mtime


def test_times_set_later_are_never_earlier_than_creation(mnt):
    """`touch` of a new file (utimensat UTIME_NOW: the kernel's clock) after its creation (the
    daemon's clock) never moves its times back, as ext4 guarantees (pathlib's tests check it)."""
    for n in range(30):
        path = mnt.path / f"t{n}"
        path.touch()
        created = os.stat(path)
        os.utime(path, ns=(created.st_atime_ns - 10**10, created.st_mtime_ns - 10**10))
        os.utime(path)
        touched = os.stat(path)
        assert touched.st_mtime_ns >= created.st_mtime_ns, (n, created.st_mtime_ns, touched.st_mtime_ns)
        assert touched.st_ctime_ns >= created.st_ctime_ns


def test_xattrs(mnt):
    path = mnt.path / "f"
    path.write_text("x")
    os.setxattr(path, "user.one", b"1")
    os.setxattr(path, "user.two", b"\0binary\xff")
    assert os.getxattr(path, "user.two") == b"\0binary\xff"
    assert sorted(os.listxattr(path)) == ["user.one", "user.two"]
    os.removexattr(path, "user.one")
    assert os.listxattr(path) == ["user.two"]
    with pytest.raises(OSError) as e:
        os.getxattr(path, "user.one")
    assert e.value.errno == errno.ENODATA


def test_xattr_create_and_replace_flags_on_a_file_with_many_xattrs(mnt):
    """XATTR_CREATE refuses a name that exists, XATTR_REPLACE one that does not (pyfuse3
    checks them with a getxattr: a miss among thousands of names must stay cheap)."""
    path = mnt.path / "f"
    path.write_text("x")
    names = [f"user.var_{i}" for i in range(600)]
    for name in names:
        os.setxattr(path, name, b"orig", os.XATTR_CREATE)
    with pytest.raises(OSError) as exists:
        os.setxattr(path, names[7], b"again", os.XATTR_CREATE)
    assert exists.value.errno == errno.EEXIST
    with pytest.raises(OSError) as missing:
        os.setxattr(path, "user.absent", b"v", os.XATTR_REPLACE)
    assert missing.value.errno == errno.ENODATA
    os.setxattr(path, names[7], b"new", os.XATTR_REPLACE)
    assert os.getxattr(path, names[7]) == b"new"
    assert sorted(os.listxattr(path)) == sorted(names)


@pytest.mark.parametrize("name", ["nonamespace", "gnu.other", "system.sls_private"])
def test_xattr_outside_the_known_namespaces_is_refused_as_on_ext4(mnt, name):
    path = mnt.path / "f"
    path.write_text("x")
    os.setxattr(path, "trusted.kept", b"1")
    with pytest.raises(OSError) as e:
        os.setxattr(path, name, b"v")
    assert e.value.errno == errno.EOPNOTSUPP
    assert os.listxattr(path) == ["trusted.kept"]


def test_fifo_and_statfs(mnt):
    fifo = mnt.path / "fifo"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    pid = os.fork()
    if pid == 0:
        with open(fifo, "wb") as w:
            w.write(b"through the fifo")
        os._exit(0)
    with open(fifo, "rb") as r:
        assert r.read() == b"through the fifo"
    assert os.waitpid(pid, 0)[1] == 0
    fs = os.statvfs(mnt.path)
    assert fs.f_namemax == 255 and fs.f_blocks > 0 and fs.f_bavail > 0


def test_o_append_from_two_descriptors(mnt):
    path = mnt.path / "log"
    fd1 = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    fd2 = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(50):
            os.write(fd1 if i % 2 else fd2, b"%03d\n" % i)
    finally:
        os.close(fd1)
        os.close(fd2)
    assert path.read_bytes() == b"".join(b"%03d\n" % i for i in range(50))


def test_shared_writable_mmap(mnt):
    path = mnt.path / "mapped"
    path.write_bytes(b"\0" * 200_000)
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 200_000, mmap.MAP_SHARED)
        m[0:5] = b"hello"
        m[150_000:150_005] = b"world"
        m.flush()
        m.close()
    data = path.read_bytes()
    assert data[0:5] == b"hello" and data[150_000:150_005] == b"world"


def test_unlinked_but_open_file_keeps_working_and_is_reclaimed(mnt):
    path = mnt.path / "tmp"
    with open(path, "w+b") as f:
        f.write(b"still here")
        f.flush()
        os.unlink(path)
        assert not path.exists()
        f.seek(0)
        assert f.read() == b"still here"
        f.write(b" and more")
        os.fsync(f.fileno())
        f.seek(0)
        assert f.read() == b"still here and more"
        ino = os.fstat(f.fileno()).st_ino
        sls("checkpoint", mnt.path)
    sls("checkpoint", mnt.path)
    mnt.umount()
    with mnt.open_store() as store:
        assert store.holders("main") == {}, "released at close"
        from mount import schema
        assert store.volume("main").get(schema.inode_key(ino)) is None, "purged after close"


def test_fsync_and_fdatasync_return(mnt):
    with open(mnt.path / "f", "wb") as f:
        f.write(b"durable")
        os.fsync(f.fileno())
        os.fdatasync(f.fileno())
    fd = os.open(mnt.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_umask_and_setgid_directory(mnt):
    old = os.umask(0o027)
    try:
        (mnt.path / "f").write_text("x")
        os.mkdir(mnt.path / "d", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(mnt.path / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(mnt.path / "d").st_mode) == 0o750
    g = mnt.path / "g"
    g.mkdir()
    os.chown(g, 0, 4321)
    os.chmod(g, 0o2775)
    (g / "child").write_text("x")
    (g / "subdir").mkdir()
    assert os.stat(g / "child").st_gid == 4321
    assert os.stat(g / "subdir").st_mode & stat.S_ISGID


def test_a_directory_handle_opens_the_directory_after_a_remount(mnt):
    """A directory the kernel no longer holds is reconnected to the tree through ".." (the
    kernel asks the daemon for ".." in it, then for its name in the parent's listing) before
    open_by_handle_at returns it (xfstests generic/467, 477, and 777 for connectable file
    handles, whose parent is a directory); before, ".." gave ESTALE but at the root."""
    (mnt.path / "a" / "b").mkdir(parents=True)
    (mnt.path / "a" / "b" / "f").write_bytes(b"in b")
    handle = file_handle(mnt.path / "a" / "b")
    (mnt.path / "a").rename(mnt.path / "a2")
    mnt.umount()
    mnt.mount()
    fd = open_by_handle(mnt.path, handle)
    try:
        assert os.listdir(fd) == ["f"]
        assert os.readlink(f"/proc/self/fd/{fd}") == str(mnt.path / "a2" / "b")
    finally:
        os.close(fd)
