"""Stores as slsfs wrote them before volume format 2, for the tests that old stores still
mount, read, diff and are upgraded as they are written."""
from __future__ import annotations

import json
import struct

from objectstore import Store

from mount import schema

V1_INODE = struct.Struct("<BIIIIQQqqqI")    # format 1's inode record (docs/FORMAT.md): no parent


def as_format_1(store: Store, name: str = "main") -> None:
    """Rewrite volume `name` as slsfs wrote it before format 2 (inode records without a
    parent, superblock format 1) and commit: an old store."""
    tree = store.volume(name)
    for key, raw in list(tree.items(b"I", b"J")):
        node = schema.Inode.decode(int.from_bytes(key[1:], "big"), raw)
        tree.put(key, V1_INODE.pack(1, node.mode, node.nlink, node.uid, node.gid, node.rdev,
                                    node.size, node.atime_ns, node.mtime_ns, node.ctime_ns,
                                    node.generation))
    sb = json.loads(tree.get(schema.SUPER_KEY))
    tree.put(schema.SUPER_KEY, json.dumps({**sb, "format": 1}, sort_keys=True).encode())
    store.commit("as format 1")
