"""Which directory holds a directory (Volume.parent_of, known_parent): asked by the kernel
reconnecting a directory it forgot (".." lookups, one per level, open_by_handle_at) and
by readdir's ".." entry. A directory's inode record holds its parent (volume format 2);
a volume of format 1 still mounts, its records gaining the parent as they are written."""
from __future__ import annotations

import ctypes
import json
import os
import stat

from objectstore import Store

from file_handles import file_handle, open_by_handle
from format_1 import as_format_1
from mount import schema
from mount.treediff import TreeDiff, diff_steps
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


def record_version(store: Store, ino: int, name: str = "main") -> int:
    return store.volume(name).get(schema.inode_key(ino))[0]


def deep_tree(volume: Volume) -> tuple[list[int], int]:
    """DEPTH nested directories (files beside each level: entries a walk goes past) and an
    empty one below: (the chain from the root down, the empty leaf)."""
    chain = [volume.root_ino]
    for level in range(DEPTH):
        for n in range(5):
            volume.create(chain[-1], b"f%d" % n, FILE, 0, 0)
        chain.append(volume.create(chain[-1], b"d%d" % level, DIR, 0, 0).ino)
    return chain, volume.create(chain[-1], b"empty", DIR, 0, 0).ino


def reconnect(volume: Volume, chain: list[int], leaf: int) -> None:
    """The kernel's ".." lookups from `leaf` up to the root, each answer checked."""
    assert volume.parent_of(leaf) == chain[-1]
    for level in range(len(chain) - 1, 0, -1):
        assert volume.parent_of(chain[level]) == chain[level - 1]
    assert volume.parent_of(volume.root_ino) == volume.root_ino


def test_a_forgotten_deep_directory_is_reconnected_without_a_walk(store, tmp_path):
    volume = Volume(store, store.volume("main"), "main")
    chain, empty_leaf = deep_tree(volume)
    volume.seal()
    store.commit("tree")
    store.close()
    store = Store.open(tmp_path / "store")
    fresh = Volume(store, store.volume("main"), "main")      # a new daemon has seen no lookup
    walks = counting_walks(fresh)
    reconnect(fresh, chain, empty_leaf)
    assert walks[0] == 0                                       # format 1: a walk of every entry
    store.close()


def test_a_format_1_volume_is_reconnected_with_one_walk(store, tmp_path):
    """Its records do not hold the parent: one walk learns the parents of every directory
    holding entries (the levels above), an empty leaf costs a walk of its own."""
    volume = Volume(store, store.volume("main"), "main")
    chain, empty_leaf = deep_tree(volume)
    volume.seal()
    as_format_1(store)
    store.close()
    store = Store.open(tmp_path / "store")
    fresh = Volume(store, store.volume("main"), "main")
    assert fresh.sb.format == 1
    walks = counting_walks(fresh)
    reconnect(fresh, chain[:-1], chain[-1])         # the last level holds the empty leaf
    assert walks[0] == 1
    assert fresh.parent_of(empty_leaf) == chain[-1]
    assert walks[0] == 2
    store.close()


def test_a_format_1_volume_gets_format_2_records_as_they_are_written(store, tmp_path):
    """A record written again holds the parent its daemon learnt (a lookup: note_parent, or
    a walk); the superblock says format 2 once such a record is in the volume, and not
    before (a volume only read stays as old slsfs wrote it)."""
    volume = Volume(store, store.volume("main"), "main")
    a = volume.create(volume.root_ino, b"a", DIR, 0, 0).ino
    looked_up = volume.create(a, b"looked-up", DIR, 0, 0).ino
    walked = volume.create(a, b"walked", DIR, 0, 0).ino
    untouched = volume.create(a, b"untouched", DIR, 0, 0).ino
    volume.seal()
    as_format_1(store)
    store.close()
    store = Store.open(tmp_path / "store")
    old = Volume(store, store.volume("main"), "main")
    old.note_parent(looked_up, a)
    assert old.parent_of(walked) == a
    old.seal()
    store.commit("read only")
    assert json.loads(store.volume("main").get(schema.SUPER_KEY))["format"] == 1
    for ino in (looked_up, walked):
        old.touch(old.inode(ino), ctime=True)            # a chmod, say
    old.seal()
    store.commit("written")
    assert json.loads(store.volume("main").get(schema.SUPER_KEY))["format"] == 2
    assert [record_version(store, ino) for ino in (looked_up, walked, untouched)] == [2, 2, 1]
    store.close()
    store = Store.open(tmp_path / "store")
    again = Volume(store, store.volume("main"), "main")
    walks = counting_walks(again)
    assert (again.parent_of(looked_up), again.parent_of(walked)) == (a, a)
    assert walks[0] == 0
    assert again.parent_of(untouched) == a
    assert walks[0] == 1
    store.close()


def test_a_record_written_again_only_to_gain_its_parent_is_no_change_to_sls_diff(store):
    volume = Volume(store, store.volume("main"), "main")
    d = volume.create(volume.root_ino, b"d", DIR, 0, 0).ino
    volume.create(d, b"f", FILE, 0, 0)
    volume.seal()
    as_format_1(store)
    before = store.roots()
    old = Volume(store, store.volume("main"), "main")
    old.note_parent(d, old.root_ino)
    old.mark(old.inode(d))
    old.seal()
    assert record_version(store, d) == 2
    result = TreeDiff()
    for _ in diff_steps(store, before, store.roots(), "main", result):
        pass
    assert result.to_json() == {"added": [], "removed": [], "changed": []}


def test_parents_follow_renames_and_removals(store, tmp_path):
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
    volume.seal()
    store.commit("moved")
    store.close()
    store = Store.open(tmp_path / "store")
    fresh = Volume(store, store.volume("main"), "main")      # the records say the same
    walks = counting_walks(fresh)
    assert (fresh.parent_of(sub), fresh.parent_of(other)) == (b, volume.root_ino)
    assert walks[0] == 0
    fresh.unlink(volume.root_ino, b"x", directory=True)
    assert fresh.parent_of(other) is None
    store.close()


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


def walks_logged(m) -> int:
    """The walks for a parent that the daemons of mount `m` logged (Volume._walk_parents)."""
    return (m.store / "mount.log").read_text().count("has no parent in its record")


def make_deep_directories(m) -> tuple[object, object]:
    """a/b/c/d with a file beside each level, and a handle of d: (d's path, its handle)."""
    deep = m.path
    for name in "abcd":
        (deep / f"{name}.txt").write_text(name)
        deep = deep / name
        deep.mkdir()
    return deep, file_handle(deep)


def assert_reconnected(m, handle, path) -> None:
    """A new daemon (a remount) opens `handle` as `path`: the kernel forgot every level."""
    m.mount()
    fd = open_by_handle(m.path, handle)
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(path)
    finally:
        os.close(fd)


def test_a_directory_handle_is_reconnected_after_a_remount_without_a_walk(mnt):
    deep, handle = make_deep_directories(mnt)
    mnt.umount()
    assert_reconnected(mnt, handle, deep)
    assert walks_logged(mnt) == 0                      # format 1: one walk


def test_a_store_of_format_1_mounts_reads_and_is_upgraded_as_it_is_written(mnt):
    """A store written before format 2 (inode records without the parent) mounts with its
    files and directories as they were; a directory handle is reconnected with one walk;
    what is written is written in format 2 and the rest stays as it was."""
    deep, handle = make_deep_directories(mnt)
    (mnt.path / "a" / "big").write_bytes(data := os.urandom(300_000))
    (mnt.path / "a" / "quiet").mkdir()                 # never named after the remount
    mnt.umount()
    with mnt.open_store(readonly=False) as store:
        as_format_1(store)
    assert_reconnected(mnt, handle, deep)
    assert walks_logged(mnt) == 1
    assert (mnt.path / "a" / "big").read_bytes() == data
    assert sorted(os.listdir(mnt.path / "a")) == ["b", "b.txt", "big", "quiet"]
    assert (mnt.path / "a" / "b" / "c.txt").read_text() == "c"
    assert dot_dot_inode(deep) == os.stat(deep.parent).st_ino
    os.chmod(mnt.path / "a" / "b", 0o700)
    mnt.umount()
    with mnt.open_store() as store:
        volume = Volume(store, store.volume("main"), "main")
        a = volume.lookup(volume.root_ino, b"a").ino
        b, quiet = volume.lookup(a, b"b").ino, volume.lookup(a, b"quiet").ino
        assert (volume.sb.format, record_version(store, b), record_version(store, quiet)) == (2, 2, 1)
        assert (volume.inode(b).parent, volume.inode(b).mode & 0o777) == (a, 0o700)
    mnt.mount()
    assert (mnt.path / "a" / "b" / "c" / "d").is_dir()
