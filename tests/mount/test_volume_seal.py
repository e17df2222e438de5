"""The inode layer without FUSE: what `Volume.seal()` must carry into the tree.

A create only bumps the in-memory superblock (next inode number); these tests check
that a commit after `seal()` holds it, so that a volume reopened from that commit never
hands out an inode number that is already in use.
"""
from __future__ import annotations

import stat

from objectstore import Store

from mount.filesystem import ensure_volume
from mount.volume import Volume

FILE = stat.S_IFREG | 0o644


def test_new_inode_numbers_survive_seal_and_commit(tmp_path):
    store = Store.init(tmp_path / "store")
    try:
        ensure_volume(store, "main")
        volume = Volume(store, store.volume("main"), "main")
        made = [volume.create(volume.root_ino, b"f%d" % i, FILE, 0, 0).ino for i in range(3)]
        volume.seal()
        store.commit("three files")
        store.close()

        store = Store.open(tmp_path / "store")
        reopened = Volume(store, store.volume("main"), "main")
        assert reopened.sb.next_ino == made[-1] + 1
        fresh = reopened.create(reopened.root_ino, b"g", FILE, 0, 0).ino
        assert fresh not in made
        assert [reopened.lookup(reopened.root_ino, b"f%d" % i).ino for i in range(3)] == made
    finally:
        store.close()


def test_a_tree_copied_after_seal_has_the_new_inode_number(tmp_path):
    store = Store.init(tmp_path / "store")
    try:
        ensure_volume(store, "main")
        volume = Volume(store, store.volume("main"), "main")
        before = volume.sb.next_ino
        volume.create(volume.root_ino, b"f", FILE, 0, 0)
        volume.seal()
        copied = Volume(store, store.volume("main").copy(), "main")   # as snapshot/clone do
        assert copied.sb.next_ino == before + 1
    finally:
        store.close()
