"""fsck names a name (tag) whose checkpoint is gone: the store serves it no more (`--at
NAME` fails), and says so instead of letting it vanish from `sls log` unexplained; the
next collection's catalog drops it."""
from __future__ import annotations

import pytest

from objectstore import NotFound, Store
from objectstore import pack as fmt
from objectstore.store import _record


def test_a_name_whose_checkpoint_is_gone_is_reported_until_the_next_gc(tmp_path):
    with Store.init(tmp_path / "store") as store:
        store.tree().put(b"k", b"v")
        store.commit("one")
        store.tag("kept", store.head.id)
        # what a damaged store leaves: a name whose commit record did not survive
        store.packs.append_meta(fmt.TAG, _record("tag", name="warm", commit=store.head.id + 41))
        store.packs.sync()
    with Store.open(tmp_path / "store") as store:
        assert store.tags() == {"kept": 1}
        with pytest.raises(NotFound):
            store.resolve("warm")
        problems = store.fsck()
        assert len(problems) == 1 and problems[0].startswith(f"name 'warm' names checkpoint {42}, which is gone")
        assert "the next `sls gc` drops the name" in problems[0]
        store.gc()
        assert store.fsck() == []
    with Store.open(tmp_path / "store", readonly=True) as store:
        assert store.fsck() == [] and store.tags() == {"kept": 1}
