"""`sls fsck` checks what group records name beyond the trees (slsfs.group_retention
.check_links): a kept group checkpoint whose files commit is gone is reported by name,
and the helpers retention keeps on purpose (a files commit still carrying the previous,
thinned record) are not."""
from __future__ import annotations

import io
import re
import subprocess
import sys

from objectstore import Store
from objectstore.stream import recv, send
from objectstore.retention import RetentionPolicy

from slsfs import groups
from slsfs.groups import GroupCheckpoint, GroupSettings
from test_group_retention import group_checkpoint, thin

POLICY = RetentionPolicy(keep_last=5, minutely=0, hourly=0, daily=0)


def test_a_kept_group_checkpoint_whose_files_commit_was_deleted_is_reported(tmp_path):
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        made = [group_checkpoint(store, seq, write_after_thaw=True) for seq in range(1, 11)]
        assert store.fsck() == []
        files, record = made[6]
        store.forget({c.id for c in store.log()} - {files})       # by hand, as the bug did
        problems = store.fsck()
        assert len(problems) == 1, problems
        assert problems[0].startswith(f"checkpoint {record}: group 'app' #7 names files commit {files}, "
                                      "which is gone")
        assert "--clone" in problems[0]
    with Store.open(tmp_path / "store", readonly=True) as reopened:     # and after a reopen
        assert len(reopened.fsck()) == 1


def test_helpers_that_retention_keeps_are_clean_after_thinning(tmp_path):
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        store.retention = POLICY
        for seq in range(1, 21):
            group_checkpoint(store, seq)
        assert thin(store) > 0
        oldest = min(store.log(), key=lambda c: c.id)
        assert oldest.label.endswith(": files")      # a helper: its own record's files commit is gone
        assert groups.load(store, "app", oldest.roots).files_commit not in {c.id for c in store.log()}
        assert store.fsck() == []


def test_a_group_checkpoint_kept_only_as_the_next_ones_files_commit_is_served_by_a_commit_with_its_files(tmp_path):
    """What an older daemon wrote for a group that changed no file between two checkpoints:
    the record names the previous group checkpoint's commit as its files commit, so
    retention kept that commit without the files commit of its own record. The files did
    not change, so another kept commit holds that same volume root: a clone starts from it
    (groups.files_commit_of), and fsck is clean."""
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        store.retention = POLICY
        _, previous = group_checkpoint(store, 1)
        settings = GroupSettings("app", "main", "/mnt", 10, ["app"])
        for seq in range(2, 12):
            root = store.commit_by_id(previous).roots["vol/main"]
            groups.save(store, GroupCheckpoint(settings, seq, 0.0, store.put(b"image %d" % seq), root, [1], previous))
            previous = store.commit(f"group app #{seq}: periodic").id
        thin(store)
        oldest = min(store.log(), key=lambda c: c.id)
        record = groups.load(store, "app", oldest.roots)
        assert record.files_commit not in {c.id for c in store.log()}
        assert groups.files_commit_of(store, record).roots["vol/main"] == record.fs
        assert store.fsck() == []


def test_a_received_record_names_the_senders_commits_and_clones_from_the_received_one(tmp_path):
    """`sls recv` stores a record as sent: its files commit id is the sender's. The
    received commit holds the record's file system, so that is what a clone starts from."""
    with Store.init(tmp_path / "sender") as sender:
        sender.create_volume("main")
        for seq in range(1, 6):
            group_checkpoint(sender, seq)
        stream = io.BytesIO()
        send(sender, sender.head, stream)
    with Store.init(tmp_path / "receiver", seed=Store.open(tmp_path / "sender", readonly=True).seed) as receiver:
        stream.seek(0)
        received = recv(receiver, stream)
        record = groups.load(receiver, "app", received.roots)
        assert record.files_commit not in {c.id for c in receiver.log()}
        assert groups.files_commit_of(receiver, record).id == received.id
        assert receiver.fsck() == []


def run_advice(store_path, problem: str) -> None:
    """Run the `sls gc STORE --forget ...` a problem line tells the user to run, as written."""
    command = re.search(r"`sls gc STORE ((?:--forget \d+ ?)+)`", problem)
    assert command, problem
    subprocess.run([sys.executable, "-m", "slsfs.cli", "gc", str(store_path), *command.group(1).split()],
                   check=True, capture_output=True)


def test_the_advice_for_a_checkpoint_whose_files_commit_is_gone_clears_it(tmp_path):
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        made = [group_checkpoint(store, seq, write_after_thaw=True) for seq in range(1, 11)]
        files, record = made[6]
        store.forget({c.id for c in store.log()} - {files})
        problem, = store.fsck()
        assert f"`sls gc STORE --forget {record}` (nothing else goes)" in problem, problem
    run_advice(tmp_path / "store", problem)
    with Store.open(tmp_path / "store", readonly=True) as store:
        assert store.fsck() == []
        assert record not in {c.id for c in store.log()} and len(store.log()) == 18


def test_a_record_whose_files_commit_holds_other_files_is_reported(tmp_path):
    """A record's `fs` is its files commit's volume root (what a clone starts from and what
    a restore puts back must be the same files); when no commit holds it, fsck says so."""
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        group_checkpoint(store, 1)
        elsewhere = store.tree()
        elsewhere.put(b"counter", b"never committed")
        changed = store.commit("a later write")
        settings = GroupSettings("app", "main", "/mnt", 10, ["app"])
        groups.save(store, GroupCheckpoint(settings, 2, 0.0, store.put(b"image 2"),
                                           elsewhere.flush(), [1], changed.id))   # no commit holds its fs
        wrong = store.commit("group app #2: periodic").id
        group_checkpoint(store, 3)
        problem, = store.fsck()
        assert problem.startswith(f"checkpoint {wrong}: group 'app' #2: its files commit {changed.id} holds other "
                                  "roots of volume(s) 'main'"), problem
    run_advice(tmp_path / "store", problem)
    with Store.open(tmp_path / "store", readonly=True) as store:
        assert store.fsck() == []
