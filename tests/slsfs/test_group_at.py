"""What `sls restore GROUP --at X` restores (slsfs.groups.resolve) on a real store: a
group checkpoint's own commit id, its files commit's id, `NAME#N`/`#N` and a name all
give that checkpoint; what names nothing, or more than one, is an error naming the
group's checkpoints."""
from __future__ import annotations

import io

import pytest

from objectstore import Store
from objectstore import pack as fmt
from objectstore.store import _record
from objectstore.stream import recv, send
from objectstore.retention import RetentionPolicy

from slsfs import groups
from slsfs.groups import GroupCheckpoint, GroupError, GroupSettings
from test_group_retention import group_checkpoint, thin


@pytest.fixture
def store(tmp_path):
    with Store.init(tmp_path / "store") as opened:
        opened.create_volume("main")
        yield opened


def test_every_id_sls_log_shows_for_a_checkpoint_restores_that_checkpoint(store):
    store.retention = RetentionPolicy(keep_last=7, minutely=0, hourly=0, daily=0)
    made = {seq: group_checkpoint(store, seq) for seq in range(1, 21)}
    store.tag("warm", made[4][1])
    thin(store)
    kept = {c.id for c in store.log()}
    checked = 0
    for seq, (files, own) in made.items():
        if own not in kept:
            continue
        assert groups.resolve(store, "app", str(own))[0].seq == seq
        assert groups.resolve(store, "app", str(files))[0].seq == seq, f"files commit {files} of #{seq}"
        record, commit = groups.resolve(store, "app", f"app#{seq}")
        assert (record.seq, commit.id) == (seq, own)
        assert groups.resolve(store, "app", f"#{seq}")[0].seq == seq
        checked += 1
    assert checked >= 4
    assert groups.resolve(store, "app", "warm")[0].seq == 4
    assert groups.resolve(store, "app", "latest")[0].seq == 20


def test_an_unknown_checkpoint_is_an_error_naming_the_groups_checkpoints(store):
    made = {seq: group_checkpoint(store, seq) for seq in range(1, 4)}
    store.tag("warm", made[2][1])
    for spec in ("999", "app#9", "#0", "cold"):
        with pytest.raises(GroupError) as caught:
            groups.resolve(store, "app", spec)
        message = str(caught.value)
        assert f"#3 (checkpoint {made[3][1]})" in message and "name 'warm'" in message, message
    with pytest.raises(GroupError, match="no persistence group 'nope'"):
        groups.resolve(store, "nope", "1")


def test_the_files_commit_of_a_thinned_checkpoint_is_refused_not_taken_for_the_one_before(store):
    made = {seq: group_checkpoint(store, seq) for seq in range(1, 6)}
    files, own = made[3]
    store.forget({c.id for c in store.log()} - {own, made[4][0]})     # #3's record commit and #4's files go
    with pytest.raises(GroupError, match=f"checkpoint {files} holds the files of group app #3, whose record was "
                                         "thinned"):
        groups.resolve(store, "app", str(files))


def test_the_files_commit_of_a_checkpoint_still_being_taken_is_the_one_before(store):
    """`--at latest` while a checkpoint is being taken: its files commit is the newest
    commit and its record is not written yet; the newest checkpoint at that commit is the
    previous one (not an error)."""
    group_checkpoint(store, 1)
    files = store.commit("group app #2: files")
    assert groups.resolve(store, "app", "latest")[0].seq == 1
    assert groups.resolve(store, "app", str(files.id))[0].seq == 1


def test_a_number_two_checkpoints_carry_after_a_rollback_is_ambiguous(store):
    made = {seq: group_checkpoint(store, seq) for seq in range(1, 4)}
    record = groups.load(store, "app", store.commit_by_id(made[1][1]).roots)    # restored from #1:
    files = store.commit("group app #2: files")                                 # numbers go on from 2
    groups.save(store, GroupCheckpoint(record.settings, 2, files.time, store.put(b"again"),
                                       files.roots["vol/main"], [1], files.id))
    again = store.commit("group app #2: periodic").id
    with pytest.raises(GroupError, match=f"ambiguous.*{again}, {made[2][1]}"):
        groups.resolve(store, "app", "app#2")
    assert groups.resolve(store, "app", str(again))[0].image == store.put(b"again")
    assert groups.resolve(store, "app", str(files.id))[1].id == again


def test_a_name_that_reads_as_a_checkpoint_number_is_ambiguous(tmp_path):
    """Such a name is refused now (objectstore.store.check_tag_name); an older slsfs took it."""
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        made = {seq: group_checkpoint(store, seq) for seq in range(1, 3)}
        store.packs.append_meta(fmt.TAG, _record("tag", name="app#1", commit=made[2][1]))   # as written then
        store.packs.sync()
    with Store.open(tmp_path / "store", readonly=True) as store:
        with pytest.raises(GroupError, match="ambiguous"):
            groups.resolve(store, "app", "app#1")


def test_partners_files_commit_restores_each_partners_checkpoint(store):
    """Two groups checkpointed together name one files commit (labelled by the first)."""
    volume = store.volume("main")
    volume.put(b"x", b"1")
    files = store.commit("group a #1: files")
    for name in ("a", "b"):
        groups.save(store, GroupCheckpoint(GroupSettings(name, "main", "/mnt", 10, [name]), 1, files.time,
                                           store.put(name.encode()), files.roots["vol/main"], [1], files.id))
    own = store.commit("group a #1 b #1: periodic").id
    for name in ("a", "b"):
        record, commit = groups.resolve(store, name, str(files.id))
        assert (record.settings.name, commit.id) == (name, own)


def test_a_received_records_files_commit_id_is_the_senders_not_a_local_commit(tmp_path):
    """`sls recv` stores records naming the sender's commit ids: a local commit with such
    an id is not that checkpoint's files commit (it holds other files)."""
    with Store.init(tmp_path / "sender") as sender:
        sender.create_volume("main")
        for seq in range(1, 4):
            group_checkpoint(sender, seq)
        seed = sender.seed
        stream = io.BytesIO()
        send(sender, sender.head, stream)
    with Store.init(tmp_path / "receiver", seed=seed) as receiver:
        receiver.create_volume("main")
        for n in range(6):
            receiver.volume("main").put(b"local", b"%d" % n)
            receiver.commit(f"local {n}")
        stream.seek(0)
        received = recv(receiver, stream, force=True)
        record = groups.load(receiver, "app", received.roots)
        assert record.files_commit < received.id                      # a local id too
        with pytest.raises(GroupError, match=f"had no checkpoint yet at checkpoint {record.files_commit}"):
            groups.resolve(receiver, "app", str(record.files_commit))
        assert groups.resolve(receiver, "app", str(received.id))[0].seq == 3


def test_the_listing_of_an_error_shows_a_checkpoint_once_when_a_stop_noted_it(store):
    """`sls stop` writes a note into the group's newest record (a second commit carrying
    the same number and files commit): the list of checkpoints an error gives shows that
    checkpoint once, by the commit that took it, with the names of both commits."""
    made = {seq: group_checkpoint(store, seq) for seq in range(1, 4)}
    groups.mark_stopped(store, "app")
    noted = store.commit("group app: stopped").id
    store.tag("last", noted)
    with pytest.raises(GroupError) as caught:
        groups.resolve(store, "app", "cold")
    message = str(caught.value)
    assert message.count("#3 ") == 1, message
    assert f"#3 (checkpoint {made[3][1]}, name 'last')" in message, message
    assert "has 3 checkpoints" in message, message
