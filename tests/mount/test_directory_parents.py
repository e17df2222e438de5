"""Which directory holds a directory (Volume.parent_of, known_parent): asked by the kernel
reconnecting a directory it forgot (".." lookups, one per level, open_by_handle_at) and
by readdir's ".." entry. Directories do not record their parent."""
from __future__ import annotations

import ctypes
import os
import stat

from objectstore import Store

from mount.volume import Volume

DIR = stat.S_IFDIR | 0o755
FILE = stat.S_IFREG | 0o644
DEPTH = 12
NR_GETDENTS64 = 217
libc = ctypes.CDLL(None, use_errno=True)


def counting_walks(volume: Volume) -> list[int]:
    """Count the walks of every directory entry that `volume` makes from now on."""
    walks = [0]
    walk = volume._named_inodes

    def counted():
        walks[0] += 1
        return walk()
    volume._named_inodes = counted
    return walks


def test_a_forgotten_deep_directory_is_reconnected_with_one_walk(store, tmp_path):
    volume = Volume(store, store.volume("main"), "main")
    chain = [volume.root_ino]
    for level in range(DEPTH):
        for n in range(5):                   # files beside each level: entries to walk past
            volume.create(chain[-1], b"f%d" % n, FILE, 0, 0)
        chain.append(volume.create(chain[-1], b"d%d" % level, DIR, 0, 0).ino)
    empty_leaf = volume.create(chain[-1], b"empty", DIR, 0, 0).ino
    volume.seal()
    store.commit("tree")
    store.close()
    store = Store.open(tmp_path / "store")
    fresh = Volume(store, store.volume("main"), "main")      # a new daemon knows no parent
    walks = counting_walks(fresh)
    assert fresh.parent_of(empty_leaf) == chain[-1]
    for level in range(DEPTH, 0, -1):                         # the kernel's ".." lookups, upwards
        assert fresh.parent_of(chain[level]) == chain[level - 1]
    assert fresh.parent_of(volume.root_ino) == volume.root_ino
    assert walks[0] == 1                                       # was one walk per level
    store.close()


def test_parents_follow_renames_and_removals(store):
    volume = Volume(store, store.volume("main"), "main")
    a = volume.create(volume.root_ino, b"a", DIR, 0, 0).ino
    b = volume.create(volume.root_ino, b"b", DIR, 0, 0).ino
    sub = volume.create(a, b"sub", DIR, 0, 0).ino
    other = volume.create(b, b"other", DIR, 0, 0).ino
    assert volume.parent_of(sub) == a
    volume.rename(a, b"sub", b, b"sub")
    assert volume.parent_of(sub) == b
    volume.rename(b, b"sub", volume.root_ino, b"x", exchange=False)
    volume.rename(volume.root_ino, b"x", b, b"other", exchange=True)
    assert (volume.parent_of(sub), volume.parent_of(other)) == (b, volume.root_ino)
    volume.unlink(volume.root_ino, b"x", directory=True)
    assert volume.parent_of(other) is None


def dot_dot_inode(directory) -> int:
    """d_ino of ".." as getdents64(2) returns it for `directory`."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = ctypes.create_string_buffer(65536)
        n = libc.syscall(NR_GETDENTS64, fd, buf, len(buf))
        assert n > 0, os.strerror(ctypes.get_errno())
        raw, pos = buf.raw[:n], 0
        while pos < n:
            ino = int.from_bytes(raw[pos:pos + 8], "little")
            reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
            name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
            if name == b"..":
                return ino
            pos += reclen
    finally:
        os.close(fd)
    raise AssertionError(f"no '..' in the listing of {directory}")


def test_a_listing_gives_the_parent_inode_number_for_dot_dot(mnt):
    (mnt.path / "a" / "b").mkdir(parents=True)
    (mnt.path / "c").mkdir()
    assert dot_dot_inode(mnt.path / "a" / "b") == os.stat(mnt.path / "a").st_ino
    os.rename(mnt.path / "a" / "b", mnt.path / "c" / "b")
    assert dot_dot_inode(mnt.path / "c" / "b") == os.stat(mnt.path / "c").st_ino
    mnt.umount()
    mnt.mount()                       # a new daemon: known from the kernel's lookups of the path
    assert dot_dot_inode(mnt.path / "c" / "b") == os.stat(mnt.path / "c").st_ino
    assert dot_dot_inode(mnt.path) == os.stat(mnt.path).st_ino
