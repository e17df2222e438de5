"""A group moves to another store: `sls send GROUP [--from]`, `sls recv`, `sls restore` there;
a corrupted stream is refused and leaves no store behind (or the receiving store as it was)."""
from __future__ import annotations

import json
import re
import sys

import pytest

from group_helpers import PATH_LOGGER, GroupStore, each_logs_on_its_own, log_lines, read_counter, wait_for


@pytest.mark.parametrize("receiver", ["made by recv", "made by sls init"])
def test_send_recv_restore_and_corrupt_stream(group_store, group_binaries, tmp_path, receiver):
    """A full stream, then an incremental one (--from the first), keep a passive copy of
    the group up to date; restored there, it continues from the second checkpoint. The
    receiving store is new, or one `sls init` made and nothing used (it takes the sender's
    seed, so the incremental applies)."""
    src = group_store
    src.sls("run", "--store", str(src.path), "--name", "mover", "--hz", "5", "--",
            str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: (read_counter(src.mnt / "counter") or 0) > 20, "the target to count")
    src.checkpoint("mover")
    stream = tmp_path / "mover.stream"
    sent = src.sls("send", "mover", "--store", str(src.path), "-o", str(stream)).stderr
    first = re.search(r"sent checkpoint (\d+) \(full\)", sent).group(1)
    floor = wait_for(lambda: (read_counter(src.mnt / "counter") or 0) > 200 and read_counter(src.mnt / "counter"),
                     "the target to count on")
    src.checkpoint("mover")                              # holds a count >= floor
    increment = tmp_path / "mover.incremental"
    sent = src.sls("send", "mover", "--store", str(src.path), "--from", first, "-o", str(increment)).stderr
    assert f"incremental from {first}" in sent
    assert increment.stat().st_size < stream.stat().st_size / 2
    src.sls("stop", "--store", str(src.path))

    other = tmp_path / "other"
    other.mkdir()
    dst = GroupStore.to_receive(other / "store", other / "store.mnt")
    if receiver == "made by sls init":
        dst.sls("init", str(dst.path))
    try:
        dst.sls("recv", str(dst.path), "-i", str(stream))
        received = json.loads(dst.sls("recv", str(dst.path), "-i", str(increment), "--json").stdout)
        assert received["groups"] == ["mover"] and received["incremental"], received
        assert received["checkpoint"] == max(int(line.split()[0]) for line in
                                             dst.sls("log", str(dst.path)).stdout.splitlines())
        dst.sls("restore", "mover", "--store", str(dst.path), "--mountpoint", str(dst.mnt))
        start = wait_for(lambda: read_counter(dst.mnt / "counter"), "the moved counter")
        assert start >= floor, f"the moved group resumed at {start}, before the incremental's {floor}"
        wait_for(lambda: (read_counter(dst.mnt / "counter") or 0) > start + 20, "the moved target to count on")
        assert not (dst.mnt / "counter.bad").exists()
        assert dst.group("mover")["running"] and dst.group("mover")["mountpoint"] == str(dst.mnt)
        dst.sls("stop", "--store", str(dst.path))
    finally:
        dst.cleanup()

    data = bytearray(stream.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.stream"
    bad.write_bytes(bytes(data))
    bad_store = tmp_path / "bad-store"
    if receiver == "made by sls init":
        src.sls("init", str(bad_store))
        before = sorted(p.name for p in bad_store.iterdir())
    refused = src.sls("recv", str(bad_store), "-i", str(bad), check=False)
    assert refused.returncode != 0 and refused.stderr.strip(), refused
    if receiver == "made by sls init":
        assert sorted(p.name for p in bad_store.iterdir()) == before
        assert "create volume" in src.sls("log", str(bad_store)).stdout
    else:
        assert not bad_store.exists()
    assert not list(tmp_path.glob(".*replaced-by-recv"))


def test_a_received_group_is_restored_at_the_receiving_stores_mount_point(group_store, group_binaries, tmp_path):
    """After `sls recv`, a plain `sls restore GROUP --store B` mounts at B's own mount point
    (B.mnt, as `sls run` and `sls restore --clone` pick), not at the sender's path, which it
    took once the sender had stopped (and the sender's own restore then found it taken)."""
    src = group_store
    src.sls("run", "--store", str(src.path), "--name", "mover", "--hz", "5", "--",
            str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: (read_counter(src.mnt / "counter") or 0) > 5, "the target to count")
    src.sls("stop", "--store", str(src.path))
    stream = tmp_path / "mover.stream"
    src.sls("send", "mover", "--store", str(src.path), "-o", str(stream))
    dst = GroupStore.to_receive(tmp_path / "other", tmp_path / "other.mnt")
    try:
        dst.sls("recv", str(dst.path), "-i", str(stream))
        out = dst.sls("restore", "mover", "--store", str(dst.path)).stdout
        assert f"running in {dst.mnt}\n" in out + "\n", out
        assert dst.group("mover")["mountpoint"] == str(dst.mnt)
        wait_for(lambda: read_counter(dst.mnt / "counter"), "the moved counter")
        assert not src.mnt.is_mount()
        out = src.sls("restore", "mover", "--store", str(src.path)).stdout   # the sender's stays its own
        assert f"running in {src.mnt}\n" in out + "\n", out
        dst.sls("stop", "--store", str(dst.path))
    finally:
        dst.cleanup()


def test_a_group_received_beside_its_running_sender_keeps_to_its_own_files(group_store, tmp_path):
    """A group restored from another store of this machine, its sender running on, sees its
    new directory where it ran: the absolute paths it kept reach the receiving store's
    files, never the sender's live ones (it appended to the sender's log), and its mount
    namespace keeps nothing of the sender's mount."""
    src = group_store
    src.sls("run", "--store", str(src.path), "--name", "logger", "--hz", "10", "--",
            sys.executable, str(PATH_LOGGER), "log")
    wait_for(lambda: len(log_lines(src.mnt / "log")) > 20, "the target to log")
    stream = tmp_path / "logger.stream"
    src.sls("send", "logger", "--store", str(src.path), "-o", str(stream))
    dst = GroupStore.to_receive(tmp_path / "other", tmp_path / "other.mnt")
    try:
        dst.sls("recv", str(dst.path), "-i", str(stream))
        dst.sls("restore", "logger", "--store", str(dst.path))
        each_logs_on_its_own([src.mnt, dst.mnt], seen_at=src.mnt)
        # nor does it hold the sender's mount (whose daemon an unmount would then wait for)
        with open(f"/proc/{dst.group('logger')['pids'][0]}/mountinfo") as f:
            held = [line for line in f if f" {src.path} " in line]
        assert not held, held
        dst.sls("stop", "--store", str(dst.path))
    finally:
        dst.cleanup()
