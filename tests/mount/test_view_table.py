"""The view table without FUSE: which views are live (written, sealed, counted for
space) as checkpoint trees are browsed and clones come and go."""
from __future__ import annotations

import os
import stat

import trio

from objectstore import Store

from mount.filesystem import FileSystem
from mount.views import split_ino


class Caller:
    uid = gid = pid = 0
    umask = 0o022


def test_live_volumes_are_the_writable_ones_whatever_is_browsed(tmp_path):
    store = Store.init(tmp_path / "store")
    try:
        fs = FileSystem(store, "main", checkpoint_interval_ms=None)
        ops = fs.ops

        async def scenario() -> None:
            await ops.mkdir(1, b"d", stat.S_IFDIR | 0o755, Caller)
            fs.checkpoint("first")
            for commit in store.log():                 # browse old trees: read-only views
                fs.resolve_path(f".sls/checkpoints/{commit.id}/fs")
            assert fs.views.live_volumes() == [fs.main]

            fs.clone("d", "c")
            clone = fs.views[split_ino(fs.resolve_path("c"))[0]]   # its live view, made on lookup
            assert fs.views.live_volumes() == [fs.main, clone]
            fh, attr = await ops.create(fs.resolve_path("c"), b"f", 0o644, os.O_WRONLY, Caller)
            await ops.write(fh.fh, 0, b"data")
            await ops.release(fh.fh)
            assert fs.dirty and clone.buffered_bytes == 4
            fs.checkpoint("clone written")              # sealed: it was a live view
            assert clone.buffered_bytes == 0 and not fs.dirty

            await ops.unlink(fs.resolve_path("c"), b"f", Caller)
            await ops.rmdir(1, b"c", Caller)            # the clone goes: its view turns read-only
            assert clone.readonly
            assert fs.views.live_volumes() == [fs.main]

        trio.run(scenario)
    finally:
        store.close()
