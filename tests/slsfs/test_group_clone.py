"""`sls restore GROUP --clone --count K`: K independent copies of one checkpoint, each on
its own O(1) clone of the checkpoint's files; `sls stop CLONE` stops one of them; copies of
a server share its listening port."""
from __future__ import annotations

import json
import os
import socket
import sys

from group_helpers import PATH_LOGGER, each_logs_on_its_own, log_lines, read_counter, wait_for


def test_clones_run_independently_from_one_checkpoint(group_store, group_binaries):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "base", "--hz", "5", "--",
              str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > 20, "the target to count")
    store.sls("checkpoint", "base", "--store", str(store.path), "--name", "warm")
    out = store.sls("restore", "base", "--store", str(store.path), "--at", "warm", "--clone", "--count", "2",
                    "--json").stdout
    clones = json.loads(out)["clones"]
    assert [c["group"] for c in clones] == ["base.clone1", "base.clone2"]
    for clone in clones:
        directory = store.mnt / clone["group"]
        start = wait_for(lambda: read_counter(directory / "counter"), f"{clone['group']}'s counter")
        wait_for(lambda: (read_counter(directory / "counter") or 0) > start + 20, f"{clone['group']} to count on")
        assert not (directory / "counter.bad").exists(), (directory / "counter.bad").read_text()
        assert store.group(clone["group"])["running"]
    # independent: each clone writes its own file; the original runs on in the mount root
    a, b = (read_counter(store.mnt / c["group"] / "counter") for c in clones)
    assert a is not None and b is not None
    assert store.group("base")["running"]

    # one clone stopped on its own; a roll back of the original would reset the clones'
    # files and stop them: refused until asked for with --force
    assert "stopped group base.clone1" in store.sls("stop", "base.clone1", "--store", str(store.path)).stdout
    running = {g["group"] for g in store.ps()["groups"]}
    assert running == {"base", "base.clone2"}, running
    refused = store.sls("restore", "base", "--store", str(store.path), "--at", "latest", check=False)
    assert refused.returncode == 1 and "base.clone2" in refused.stderr and "--force" in refused.stderr
    assert store.group("base.clone2")["running"], "a refused restore leaves every group running"
    # the running clone was checkpointed with the original, so it comes back with it; the
    # one stopped before does not (its last record may be of the same instant: stopped)
    store.sls("restore", "base", "--store", str(store.path), "--at", "latest", "--force")
    assert {g["group"] for g in store.ps()["groups"]} == {"base", "base.clone2"}
    store.sls("stop", "--store", str(store.path))


def _ask(port: int) -> tuple[str, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        namespace, answered = conn.makefile().readline().split()
    return namespace, int(answered)


def test_clones_of_a_server_share_its_port(group_store):
    """Copies of a listening server all serve its port (the kernel spreads connections among
    them), each from the checkpoint's memory; while the original holds the port, a clone
    request fails as a whole with the reason and leaves no copy running. After a crash the
    copies come back together, still sharing the port."""
    store = group_store
    port = store.run_tcp_server("web")
    original = {_ask(port) for _ in range(3)}
    assert [n for _, n in sorted(original, key=lambda a: a[1])] == [1, 2, 3]
    store.sls("checkpoint", "web", "--store", str(store.path), "--name", "warm")

    refused = store.sls("restore", "web", "--store", str(store.path), "--at", "warm", "--clone",
                        "--count", "2", check=False)
    assert refused.returncode == 1 and "in use" in refused.stderr and "original" in refused.stderr, refused
    assert {g["group"] for g in store.ps()["groups"]} == {"web"}

    store.sls("stop", "web", "--store", str(store.path))
    store.sls("restore", "web", "--store", str(store.path), "--at", "warm", "--clone", "--count", "2")
    answers = [_ask(port) for _ in range(60)]
    by_copy: dict[str, list[int]] = {}
    for namespace, answered in answers:
        by_copy.setdefault(namespace, []).append(answered)
    assert len(by_copy) == 2, f"connections reached {len(by_copy)} copies: {answers}"
    for counts in by_copy.values():                      # each continues the checkpoint's count
        assert counts == list(range(4, 4 + len(counts))), counts

    # the copies are checkpointed together: after a crash both come back, sharing the port,
    # each with its count of the moment
    names = [g["group"] for g in store.ps()["groups"]]
    store.checkpoint(names[0])
    store.crash()
    out = store.sls("restore", names[0], "--store", str(store.path)).stdout
    assert all(f"group {name}: restored" in out for name in names), out
    again: dict[str, list[int]] = {}
    for namespace, answered in (_ask(port) for _ in range(60)):
        again.setdefault(namespace, []).append(answered)
    assert len(again) == 2, f"after the crash, connections reached {len(again)} copies: {again}"
    assert sorted(min(c) for c in again.values()) == sorted(max(c) + 1 for c in by_copy.values()), (by_copy, again)
    store.sls("stop", "--store", str(store.path))


def _counts_on(store, directory, what: str) -> int:
    """The counter in `directory`'s file once it has moved on from its first value (the
    target checks memory == file at every step: counter.bad if not)."""
    start = wait_for(lambda: read_counter(directory / "counter"), f"{what}'s counter")
    wait_for(lambda: (read_counter(directory / "counter") or 0) > start + 5 or (directory / "counter.bad").exists(),
             f"{what} to count on")
    assert not (directory / "counter.bad").exists(), f"{what}: {(directory / 'counter.bad').read_text()}"
    return read_counter(directory / "counter")


def test_clones_are_checkpointed_and_come_back_with_their_origin(group_store, group_binaries):
    """A clone is a group like any other: checkpointed with the others at one instant, so a
    crash brings it back with its origin, its memory and the files of its own directory
    (another volume, grafted into the mount) from that instant; a roll back puts its
    directory back too; `sls restore CLONE` then says it runs already. A clone of a clone
    copies the clone's directory, not the mount's."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "base", "--hz", "20", "--",
              str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: (read_counter(store.mnt / "counter") or 0) > 20, "the target to count")
    clones = json.loads(store.sls("restore", "base", "--store", str(store.path), "--clone", "--json").stdout)["clones"]
    assert [c["group"] for c in clones] == ["base.clone1"] and clones[0]["checkpoint"] is not None
    copy = store.mnt / "base.clone1"
    _counts_on(store, copy, "the clone")
    wait_for(lambda: store.group("base.clone1")["checkpoints"] >= 3, "the clone's periodic checkpoints")

    before = {d: read_counter(d / "counter") for d in (store.mnt, copy)}
    store.checkpoint("base")                       # both, at one instant; named for the roll back
    mid = store.checkpoint("base")
    wait_for(lambda: all(read_counter(d / "counter") > before[d] + 30 for d in before), "both to count on")
    store.crash()
    out = store.sls("restore", "base", "--store", str(store.path)).stdout
    assert "group base: restored" in out and "group base.clone1: restored" in out, out
    counted = {d: _counts_on(store, d, str(d)) for d in (store.mnt, copy)}
    assert all(counted[d] > before[d] for d in before), (before, counted)
    # restoring the clone too (each group after a crash, as a user would): it is back
    # already, and nothing is stopped (it was refused as a roll back of the others)
    pids = {g["group"]: g["pids"] for g in store.ps()["groups"]}
    again = store.sls("restore", "base.clone1", "--store", str(store.path)).stdout
    assert "group base.clone1: already running" in again and "nothing done" in again, again
    assert {g["group"]: g["pids"] for g in store.ps()["groups"]} == pids

    # roll back to `mid`: the clone's file goes back with its memory (its volume is reset
    # with the mount's), so the target finds them equal
    wait_for(lambda: all(read_counter(d / "counter") > counted[d] + 30 for d in counted), "both to count on")
    store.sls("restore", "base", "--store", str(store.path), "--at", str(mid), "--force")
    for name, directory in (("base", store.mnt), ("base.clone1", copy)):
        assert store.group(name)["restored_from"] == mid, store.group(name)
        _counts_on(store, directory, f"{directory} after the roll back")

    # a clone of the clone runs in a copy of the clone's directory, on its own file
    second = json.loads(store.sls("restore", "base.clone1", "--store", str(store.path), "--clone",
                                  "--json").stdout)["clones"][0]
    assert second["group"] == "base.clone1.clone1"
    _counts_on(store, store.mnt / "base.clone1.clone1", "the clone's clone")
    assert not (store.mnt / "base.clone1.clone1" / "base.clone1").exists(), "it copied the mount, not the clone"
    store.sls("stop", "--store", str(store.path))


def test_clones_started_with_no_daemon_go_to_the_mount_point_asked_for(group_store, tmp_path):
    """`sls restore G --clone --mountpoint DIR` with no daemon running (after `sls recv`, the
    group's own mount point may be another store's) mounts at DIR, as a plain restore
    does; it used to mount where the group had run."""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "base", "--hz", "0", "--",
              sys.executable, "-c", "import time; time.sleep(3600)")
    store.sls("stop", "--store", str(store.path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = store.sls("restore", "base", "--store", str(store.path), "--clone", "--mountpoint", str(elsewhere),
                    "--json").stdout
    assert json.loads(out)["clones"][0]["directory"] == str(elsewhere / "base.clone1")
    assert os.path.ismount(elsewhere) and not os.path.ismount(store.mnt)
    other = tmp_path / "other"
    other.mkdir()
    refused = store.sls("restore", "base", "--store", str(store.path), "--clone", "--mountpoint", str(other),
                        check=False)
    assert refused.returncode == 1 and f"serves it at {elsewhere}" in refused.stderr, refused.stderr
    store.sls("stop", "--store", str(store.path))
    assert not os.path.ismount(elsewhere)


def test_a_clone_finds_its_own_files_at_the_paths_its_origin_used(group_store):
    """A clone's processes see the clone's directory at the path where their origin ran, so
    a program that keeps absolute paths (SQLite's journal, Redis's dump file, a log) reaches
    the clone's files through them, never its origin's, and finds itself in the directory
    it was in; after a crash too. (A clone appended to its origin's log.)"""
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "logger", "--hz", "20", "--",
              sys.executable, str(PATH_LOGGER), "log")
    wait_for(lambda: len(log_lines(store.mnt / "log")) > 20, "the target to log")
    store.sls("restore", "logger", "--store", str(store.path), "--clone")
    copy = store.mnt / "logger.clone1"
    clone = store.group("logger.clone1")
    assert (clone["mountpoint"], clone["seen_at"]) == (str(copy), str(store.mnt))     # (sls ps --json)

    each_logs_on_its_own([store.mnt, copy], seen_at=store.mnt)
    store.crash()
    store.sls("restore", "logger", "--store", str(store.path))
    assert {g["group"] for g in store.ps()["groups"]} == {"logger", "logger.clone1"}
    each_logs_on_its_own([store.mnt, copy], seen_at=store.mnt)
    store.sls("stop", "--store", str(store.path))
