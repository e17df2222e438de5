"""Retention in the group daemon (slsfs.group_retention) on a real store: old group
checkpoints are thinned by the store's policy, and every kept group record still finds
its "files" commit."""
from __future__ import annotations

import time

from objectstore import Store
from objectstore.retention import RetentionPolicy, retained

from slsfs import group_retention, groups
from slsfs.groups import GroupCheckpoint, GroupSettings

CHECKPOINTS = 30


def group_checkpoint(store: Store, seq: int, *, write_after_thaw: bool = False) -> tuple[int, int]:
    """What the daemon writes for one group checkpoint: a files commit, then the record
    (its commit holds the same volume root, unless the group wrote after the thaw and the
    file system was sealed before the record's commit)."""
    volume = store.volume("main")
    volume.put(b"counter", str(seq).encode())
    files = store.commit(f"group app #{seq}: files")
    image = store.put(f"image {seq}".encode())
    settings = GroupSettings("app", "main", "/mnt", 10, ["app"])
    groups.save(store, GroupCheckpoint(settings, seq, files.time, image, files.roots["vol/main"], [1], files.id))
    if write_after_thaw:
        volume.put(b"counter", b"%d and more" % seq)
    return files.id, store.commit(f"group app #{seq}").id


def thin(store: Store) -> int:
    """The group daemon's retention on a store without a mount: the store's policy plus
    group_retention.needed (what FileSystem.apply_retention keeps with the `also_keep`
    slsfs.daemon gives it, less the browsed checkpoints); how many commits went."""
    log = store.log()
    keep = retained(((c.id, c.time) for c in log), store.tags().values(), store.retention, time.time())
    store.forget(keep | group_retention.needed(store, keep))
    return len(log) - len(store.log())


def test_thinning_keeps_the_policy_and_the_files_commits_of_kept_records(tmp_path):
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        store.retention = RetentionPolicy(keep_last=5, minutely=0, hourly=0, daily=0)
        made = [group_checkpoint(store, seq) for seq in range(1, CHECKPOINTS + 1)]
        store.tag("keep-me", made[3][1])
        before = len(store.log())
        forgotten = thin(store)
        left = {c.id for c in store.log()}
        assert forgotten == before - len(left) > 0
        newest = {c.id for c in sorted(store.log(), key=lambda c: -c.id)[:5]}
        assert newest <= left and made[3][1] in left
        for commit in store.log():                  # the group commits (files commits are their helpers)
            if not commit.label.endswith(": files"):
                record = groups.load(store, "app", commit.roots)
                assert record.files_commit in left, f"commit {commit.id} lost its files commit"
        assert made[3][0] in left and made[0][0] not in left
        assert thin(store) == 0
        assert store.fsck() == []


def test_collect_keeps_the_files_commits_that_kept_records_name(tmp_path):
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        store.retention = RetentionPolicy(keep_last=5, minutely=0, hourly=0, daily=0)
        for seq in range(1, CHECKPOINTS + 1):
            group_checkpoint(store, seq)
        result = store.gc(also_keep=lambda keep: group_retention.needed(store, keep))   # as `sls gc` does
        assert result["commits_after"] < CHECKPOINTS
        left = {c.id for c in store.log()}
        for commit in store.log():
            if not commit.label.endswith(": files"):
                assert groups.load(store, "app", commit.roots).files_commit in left
        assert store.fsck() == []
