"""The inode layer without FUSE: records Volume keeps in memory until seal(), and the
answers it gives from memory (orphans, inodes without xattrs) must agree with the tree.
"""
from __future__ import annotations

import errno
import stat

import pytest
from pyfuse3 import FUSEError

from objectstore import Store

from mount import schema
from mount.volume import Volume

FILE = stat.S_IFREG | 0o644


def reopened(store, tmp_path) -> tuple[Store, Volume]:
    store.close()
    again = Store.open(tmp_path / "store")
    return again, Volume(again, again.volume("main"), "main")


def test_an_orphan_sealed_and_committed_is_found_after_a_restart(store, tmp_path):
    volume = Volume(store, store.volume("main"), "main")
    held = volume.create(volume.root_ino, b"held", FILE, 0, 0).ino
    gone = volume.create(volume.root_ino, b"gone", FILE, 0, 0).ino
    volume.unlink(volume.root_ino, b"held", directory=False)
    volume.unlink(volume.root_ino, b"gone", directory=False)
    assert volume.orphans() == [held, gone]
    volume.purge(gone)                          # reclaimed before any seal
    assert volume.orphans() == [held]
    volume.seal()
    store.commit("one orphan left")
    assert store.volume("main").get(schema.orphan_key(held)) == b""
    assert store.volume("main").get(schema.orphan_key(gone)) is None
    store, volume = reopened(store, tmp_path)
    try:
        assert volume.orphans() == [held]
        volume.purge(held)                      # reclaimed after it was sealed
        assert volume.orphans() == []
        volume.seal()
        store.commit("reclaimed")
        assert store.volume("main").get(schema.orphan_key(held)) is None
    finally:
        store.close()


def test_a_relinked_orphan_is_no_orphan_at_the_next_seal(store):
    volume = Volume(store, store.volume("main"), "main")
    ino = volume.create(volume.root_ino, b"f", FILE, 0, 0).ino
    volume.unlink(volume.root_ino, b"f", directory=False)
    volume.seal()                               # the orphan is in the tree now
    volume.link(ino, volume.root_ino, b"again")
    volume.unlink(volume.root_ino, b"again", directory=False)
    volume.link(ino, volume.root_ino, b"back")  # and once more, before a seal
    assert volume.orphans() == []
    volume.seal()
    assert volume.tree.get(schema.orphan_key(ino)) is None
    assert volume.lookup(volume.root_ino, b"back").ino == ino


def test_xattr_answers_from_memory_follow_set_and_remove(store, tmp_path):
    volume = Volume(store, store.volume("main"), "main")
    new = volume.create(volume.root_ino, b"new", FILE, 0, 0).ino
    with pytest.raises(FUSEError) as missing:
        volume.getxattr(new, b"security.capability")
    assert missing.value.errno == errno.ENODATA
    volume.setxattr(new, b"user.a", b"1")
    assert volume.getxattr(new, b"user.a") == b"1"
    assert volume.listxattr(new) == [b"user.a"]
    volume.removexattr(new, b"user.a")
    assert volume.listxattr(new) == []
    volume.setxattr(new, b"user.b", b"2")
    volume.seal()
    store.commit("one xattr")
    store, volume = reopened(store, tmp_path)
    try:
        with pytest.raises(FUSEError):           # a miss on an inode that has other xattrs
            volume.getxattr(new, b"security.capability")
        assert volume.getxattr(new, b"user.b") == b"2"   # still found after that miss
        volume.removexattr(new, b"user.b")
        with pytest.raises(FUSEError):
            volume.getxattr(new, b"user.b")      # now known to have none
        volume.setxattr(new, b"user.c", b"3")    # and that knowledge ends with a set
        assert volume.getxattr(new, b"user.c") == b"3"
        assert volume.listxattr(new) == [b"user.c"]
        volume.unlink(volume.root_ino, b"new", directory=False)
        volume.purge(new)
        assert volume.tree.get(schema.xattr_key(new, b"user.c")) is None
    finally:
        store.close()


def test_purge_removes_a_symlink_target(store):
    volume = Volume(store, store.volume("main"), "main")
    link = volume.create(volume.root_ino, b"l", stat.S_IFLNK | 0o777, 0, 0, target=b"/x").ino
    volume.unlink(volume.root_ino, b"l", directory=False)
    volume.purge(link)
    assert volume.tree.get(schema.symlink_key(link)) is None
    assert volume.tree.get(schema.inode_key(link)) is None


def _stored_blocks(volume: Volume, ino: int) -> list[bytes]:
    prefix = schema.block_prefix(ino)
    return [key for key, _ in volume.tree.items(prefix, schema.prefix_end(prefix))]


@pytest.mark.parametrize("steps", [
    ["write 0 1", "seal"],
    ["write 0 2", "seal", "truncate 100", "seal"],
    ["write 0 2", "seal", "truncate 100"],
    ["write 0 2", "truncate 100", "seal"],
    ["write 10 1", "write 0 1", "seal", "truncate 50", "seal"],
    ["write 0 2", "seal", "reopen"],
    ["write 0 1", "seal", "reopen"],
])
def test_purge_leaves_no_stored_block(store, tmp_path, steps):
    """purge (and truncate) look only at block 0 of a cached inode of at most one block
    (Volume._stored_block_keys): every path that shrinks a file must already have dropped
    the blocks past its size, or they would be left in the tree for ever."""
    volume = Volume(store, store.volume("main"), "main")
    ino = volume.create(volume.root_ino, b"f", FILE, 0, 0).ino
    for step in steps:
        verb, *args = step.split()
        if verb == "write":
            block, count = map(int, args)
            volume.write(ino, block * schema.BLOCK_SIZE, b"x" * (count * schema.BLOCK_SIZE))
        elif verb == "truncate":
            volume.truncate(ino, int(args[0]))
        elif verb == "seal":
            volume.seal()
        else:
            volume.seal()
            store.commit("before reopening")
            store, volume = reopened(store, tmp_path)
    try:
        assert _stored_blocks(volume, ino), "the steps should leave a stored block"
        volume.unlink(volume.root_ino, b"f", directory=False)
        volume.purge(ino)
        volume.seal()
        assert _stored_blocks(volume, ino) == []
    finally:
        if "reopen" in steps:
            store.close()


def test_a_volume_or_record_of_a_newer_format_is_refused_saying_so(store):
    """A store written by a newer slsfs is refused with what to do, not misread."""
    tree = store.volume("main")
    good = tree.get(schema.SUPER_KEY)
    tree.put(schema.SUPER_KEY, good.replace(b'"format": 2', b'"format": 3'))
    with pytest.raises(schema.FormatError, match=r"volume format 3; this slsfs reads formats 1, 2: upgrade slsfs"):
        Volume(store, tree, "main")
    tree.put(schema.SUPER_KEY, good)
    root = tree.get(schema.inode_key(schema.ROOT_INO))
    tree.put(schema.inode_key(schema.ROOT_INO), b"\x03" + root[1:])
    with pytest.raises(schema.FormatError, match="record version 03, this slsfs reads versions 1, 2"):
        Volume(store, tree, "main").inode(schema.ROOT_INO)
