"""send/recv: full and incremental streams between stores, and bad streams refused."""
from __future__ import annotations

import io
import os
import stat
import subprocess
import sys

import pytest

from objectstore import Store, StoreError
from objectstore.stream import StreamError, read_header, recv, send


def fill(store: Store, volume: str, n: int, start: int = 0) -> None:
    tree = store.volume(volume)
    for i in range(start, start + n):
        tree.put(i.to_bytes(8, "big"), f"v{i}".encode(), refs=[store.put(os.urandom(2000))])


def volume_content(store: Store, volume: str) -> dict:
    return {k: (e.value, [store.get(r) for r in e.refs]) for k, e in store.volume(volume).entries()}


@pytest.fixture
def sender(tmp_path):
    store = Store.init(tmp_path / "a")
    store.create_volume("main")
    fill(store, "main", 300)
    yield store
    store.close()


def stream_of(store, commit, base=None) -> bytes:
    out = io.BytesIO()
    send(store, commit, out, base=base)
    return out.getvalue()


def test_full_then_incremental_into_new_store(sender, tmp_path):
    c1 = sender.commit("one")
    fill(sender, "main", 20, start=300)
    sender.volume("main").delete((5).to_bytes(8, "big"))
    c2 = sender.commit("two")
    full, inc = stream_of(sender, c1), stream_of(sender, c2, base=c1)
    assert len(inc) < len(full) / 5  # only what changed travels

    inp = io.BytesIO(full)
    header = read_header(inp)
    with Store.init(tmp_path / "b", seed=int(header["seed"], 16)) as receiver:
        got = recv(receiver, inp, header)
        assert got.label == "one"
        got = recv(receiver, io.BytesIO(inc))
        assert got.label == "two"
        assert volume_content(receiver, "main") == volume_content(sender, "main")
        assert receiver.fsck() == []


def test_full_stream_into_store_with_other_seed_is_rekeyed(sender, tmp_path):
    c1 = sender.commit("one")
    with Store.init(tmp_path / "c") as receiver:
        assert receiver.seed != sender.seed
        recv(receiver, io.BytesIO(stream_of(sender, c1)))
        assert volume_content(receiver, "main") == volume_content(sender, "main")
        assert receiver.fsck() == []
        with pytest.raises(StreamError, match="another seed"):
            fill(sender, "main", 1, start=999)
            recv(receiver, io.BytesIO(stream_of(sender, sender.commit(), base=c1)))


def test_incremental_without_base_is_refused(sender, tmp_path):
    c1 = sender.commit()
    fill(sender, "main", 5, start=400)
    inc = stream_of(sender, sender.commit(), base=c1)
    with Store.init(tmp_path / "d", seed=sender.seed) as receiver:
        with pytest.raises(StreamError, match="base"):
            recv(receiver, io.BytesIO(inc))
        assert receiver.log() == []


def header_end(data: bytes) -> int:
    """Where a version 3 stream's first record starts (after the header and its digest)."""
    return 16 + int.from_bytes(data[12:16], "little") + 8


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "drop_record", "header_time", "header_label",
                                    "header_digest"])
def test_bad_streams_are_refused_and_change_nothing(sender, tmp_path, damage):
    data = bytearray(stream_of(sender, sender.commit("x")))
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "garbage":
        data = bytearray(os.urandom(4096))
    elif damage.startswith("header_"):   # still JSON, still naming the same chunks
        field = {"header_time": b'"time": 1', "header_label": b'"label": "', "header_digest": None}[damage]
        at = header_end(data) - 1 if field is None else data.index(field) + len(field)   # (a digit, a letter)
        data[at] ^= 0x01
    else:  # remove the first chunk record: later nodes then reference a chunk never sent
        start = header_end(data)
        first_len = 32 + int.from_bytes(data[start + 4:start + 8], "little")
        del data[start:start + first_len]
    with Store.init(tmp_path / "e") as receiver:
        with pytest.raises(StreamError):
            recv(receiver, io.BytesIO(bytes(data)))
        assert receiver.log() == []
        assert receiver.volumes() == []


def test_a_version_2_stream_without_a_header_digest_is_still_received(sender, tmp_path):
    data = stream_of(sender, sender.commit("older"))
    length = int.from_bytes(data[12:16], "little")
    older = data[:8] + (2).to_bytes(4, "little") + data[12:16 + length] + data[16 + length + 8:]
    with Store.init(tmp_path / "f") as receiver:
        got = recv(receiver, io.BytesIO(older))
        assert got.label == "older"
        assert volume_content(receiver, "main") == volume_content(sender, "main")


def test_cli_send_recv_roundtrip(sender, tmp_path):
    sender.commit("first")
    fill(sender, "main", 3, start=500)
    sender.commit("second")
    sender.close()
    sls = [sys.executable, "-m", "slsfs.cli"]
    full = tmp_path / "full.stream"
    inc = tmp_path / "inc.stream"
    full.write_bytes(b"")
    full.chmod(0o644)
    subprocess.run(sls + ["send", "1", "--store", str(tmp_path / "a"), "-o", str(full)], check=True)
    assert stat.S_IMODE(full.stat().st_mode) == 0o600      # a stream may hold process memory
    subprocess.run(sls + ["send", "latest", "--store", str(tmp_path / "a"), "--from", "1"],
                   check=True, stdout=inc.open("wb"))
    subprocess.run(sls + ["recv", str(tmp_path / "r"), "-i", str(full)], check=True)
    with inc.open("rb") as f:
        subprocess.run(sls + ["recv", str(tmp_path / "r")], check=True, stdin=f)
    a, r = Store.open(tmp_path / "a", readonly=True), Store.open(tmp_path / "r", readonly=True)
    assert volume_content(a, "main") == volume_content(r, "main")
    assert [c.label for c in r.log()] == ["second", "first"]
    bad = subprocess.run(sls + ["recv", str(tmp_path / "z"), "-i", str(full)[:-1] + "x"],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    full.write_bytes(full.read_bytes()[:100])
    bad = subprocess.run(sls + ["recv", str(tmp_path / "z"), "-i", str(full)], capture_output=True, text=True)
    assert bad.returncode == 1 and "truncated" in bad.stderr
    assert not (tmp_path / "z").exists()  # a failed receive into a new store leaves nothing


def test_names_travel_so_the_stream_can_come_back_incrementally(sender, tmp_path):
    """A checkpoint's names go with it (as a ZFS snapshot's name does): the receiver keeps
    it (named checkpoints outlive retention) and both stores can send `--from` that name."""
    moved = sender.commit("moved")
    sender.tag("moved", moved.id)
    sender.tag("also", moved.id)
    inp = io.BytesIO(stream_of(sender, moved))
    header = read_header(inp)
    with Store.init(tmp_path / "b", seed=int(header["seed"], 16)) as receiver:
        got = recv(receiver, inp, header)
        assert receiver.tags() == {"moved": got.id, "also": got.id}
        fill(receiver, "main", 5, start=700)
        back = stream_of(receiver, receiver.commit("ran there"), base=receiver.resolve("moved"))
    got_back = recv(sender, io.BytesIO(back))
    assert got_back.label == "ran there"
    assert volume_content(sender, "main")[(704).to_bytes(8, "big")][0] == b"v704"
    with Store.init(tmp_path / "c") as other:
        other.create_volume("mine")
        taken = other.commit().id
        other.tag("also", taken)                 # a name the receiver uses already stays its own
        got = recv(other, io.BytesIO(stream_of(sender, moved)))
        assert other.tags() == {"also": taken, "moved": got.id}


def test_cli_recv_into_a_store_in_use_says_what_to_stop(sender, tmp_path):
    """A daemon (or any writer) holds the receiving store: `sls recv` says to stop it or to
    receive elsewhere, not to "open the store read-only", which a receive cannot."""
    full = tmp_path / "full.stream"
    with full.open("wb") as out:
        send(sender, sender.commit("one"), out)
    with Store.init(tmp_path / "busy"):
        got = subprocess.run([sys.executable, "-m", "slsfs.cli", "recv", str(tmp_path / "busy"), "-i", str(full)],
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 1 and f"sls stop --store {tmp_path / 'busy'}" in got.stderr, got.stderr
        assert "read-only" not in got.stderr
    with Store.open(tmp_path / "busy", readonly=True) as after:
        assert [c.label for c in after.log()] == []


def test_a_received_checkpoint_keeps_the_time_it_was_taken(sender, tmp_path):
    """As a ZFS snapshot's creation time and a restic snapshot's time travel with it: a
    received checkpoint is dated when it was taken, not when it arrived (`sls log`,
    `.sls/at/<time>/`, `--at TIME` and retention by age read that time)."""
    from datetime import datetime
    taken = sender.commit("one")
    stream = stream_of(sender, taken)
    with Store.init(tmp_path / "b", seed=sender.seed) as receiver:
        receiver.commit("an older local checkpoint")
        got = recv(receiver, io.BytesIO(stream))
        assert got.time == taken.time
        when = datetime.fromtimestamp(taken.time).isoformat()
        assert receiver.resolve(when).id == got.id
    with Store.open(tmp_path / "b", readonly=True) as reopened:
        assert reopened.commit_by_id(got.id).time == taken.time


def test_an_unknown_checkpoint_is_told_in_the_words_the_commands_use(sender):
    """`sls send X --from Y` of a name that is not there: "no checkpoint id, name or time"
    (the commands say "name", as `sls checkpoint --name`; it said "tag")."""
    sender.commit("one")
    with pytest.raises(StoreError, match="no checkpoint id, name or time matches 'nope'"):
        sender.resolve("nope")
