"""A group sent from store A to store B and back (A -> B -> A, incremental both ways):
`sls recv` into A needs no --force when A's group only had `sls stop` noted in its record
since the checkpoint it sent, and still refuses when A's group checkpointed again since
(the receiving side really diverged). Stores written through the store's API, as a group's
daemon writes them; the receiving is the `sls recv` command's."""
from __future__ import annotations

import subprocess
import sys

from objectstore import Store
from objectstore.stream import send

from slsfs import groups
from test_group_retention import group_checkpoint


def _sls(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True, timeout=60)


def _stop(store: Store) -> None:
    """What `sls stop` writes: notes in the group's record, one commit."""
    groups.mark_stopped(store, "app")
    groups.mark_ended(store, "app", "daemon stopped", None)
    store.commit("group app: daemon stopped")


def _send(store: Store, path, base: int | None = None) -> None:
    with open(path, "wb") as out:
        send(store, store.head, out, base=store.commit_by_id(base) if base else None)


def _round_trip(tmp_path, checkpoint_again_on_a: bool) -> subprocess.CompletedProcess:
    a_path, b_path = tmp_path / "a", tmp_path / "b"
    with Store.init(a_path) as a:
        a.create_volume("main")
        group_checkpoint(a, 1)
        sent = a.head.id
        _send(a, tmp_path / "there")
        if checkpoint_again_on_a:
            group_checkpoint(a, 2)
        _stop(a)
    there = _sls("recv", str(b_path), "-i", str(tmp_path / "there"))
    assert there.returncode == 0 and f"its groups: app (bring one back: sls restore GROUP --store {b_path})" \
        in there.stderr, there
    with Store.open(b_path) as b:
        base = b.head.id
        record = groups.load(b, "app")                   # restored there: unnoted, checkpointing on
        groups.save(b, groups.GroupCheckpoint(record.settings, 1, record.time, record.image, record.fs,
                                              record.pids, record.files_commit))
        b.commit("restore group app")
        group_checkpoint(b, 2)
        group_checkpoint(b, 3)
        _stop(b)
        _send(b, tmp_path / "back", base=base)
    received = _sls("recv", str(a_path), "-i", str(tmp_path / "back"))
    with Store.open(a_path, readonly=True) as a:
        assert a.commit_by_id(sent).roots["vol/main"] != a.head.roots["vol/main"] or received.returncode != 0
        if received.returncode == 0:
            assert groups.load(a, "app").seq == 3
    return received


def test_a_group_sent_away_and_stopped_comes_back_without_force(tmp_path):
    received = _round_trip(tmp_path, checkpoint_again_on_a=False)
    assert received.returncode == 0, received.stderr


def test_a_group_that_checkpointed_again_since_it_was_sent_is_not_replaced_without_force(tmp_path):
    received = _round_trip(tmp_path, checkpoint_again_on_a=True)
    assert received.returncode == 1, received
    [line] = received.stderr.splitlines()
    assert "changed since the stream's base" in line and "--force" in line, line
