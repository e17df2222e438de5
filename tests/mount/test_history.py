"""`.sls/` history, snapshots and clones of a live mount, compared byte for byte."""
from __future__ import annotations

import errno
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mount_helpers import sls


def tree_of(root: Path) -> dict[str, bytes | str]:
    """relative path -> file bytes, 'dir' or 'link:<target>'."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = "link:" + os.readlink(full)
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = full.read_bytes()
    return out


def populate(root: Path, seed: int) -> None:
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    (root / "a" / "one").write_bytes(os.urandom(1000) + bytes([seed]))
    (root / "a" / "b" / "two").write_bytes(os.urandom(300_000))
    if not (root / "link").is_symlink():
        os.symlink("a/one", root / "link")


def checkpoint(mnt, *args: str) -> int:
    return json.loads(sls("checkpoint", mnt.path, "--json", *args).stdout)["checkpoint"]


def test_sls_is_hidden_but_reachable_and_read_only(mnt):
    (mnt.path / "f").write_text("x")
    assert ".sls" not in os.listdir(mnt.path)
    assert sorted(os.listdir(mnt.path / ".sls")) == ["at", "checkpoints", "latest", "names", "snapshots"]
    for action in (lambda: (mnt.path / ".sls" / "new").write_text("x"),
                   lambda: os.mkdir(mnt.path / ".sls" / "checkpoints" / "x"),
                   lambda: os.rmdir(mnt.path / ".sls"),
                   lambda: os.mkdir(mnt.path / ".sls")):
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno in (errno.EROFS, errno.EEXIST, errno.EACCES, errno.EPERM)


def test_checkpoint_trees_match_the_live_tree_of_their_time(mnt):
    populate(mnt.path, 1)
    first = tree_of(mnt.path)
    c1 = checkpoint(mnt, "--name", "before")
    populate(mnt.path, 2)
    (mnt.path / "a" / "one").unlink()
    (mnt.path / "extra").write_bytes(b"later")
    second = tree_of(mnt.path)
    c2 = checkpoint(mnt)
    assert tree_of(mnt.path / ".sls" / "checkpoints" / str(c1) / "fs") == first
    assert tree_of(mnt.path / ".sls" / "checkpoints" / str(c2) / "fs") == second
    info = json.loads((mnt.path / ".sls" / "checkpoints" / str(c1) / "info.json").read_text())
    assert info["id"] == c1 and "vol/main" in info["roots"]
    latest = os.readlink(mnt.path / ".sls" / "latest")
    assert int(latest.rsplit("/", 1)[1]) >= c2
    # round up to whole microseconds: ISO-8601 text must not fall just before the checkpoint
    when = datetime.fromtimestamp(math.ceil(info["time"] * 1e6) / 1e6, timezone.utc).isoformat()
    assert os.readlink(mnt.path / ".sls" / "at" / when) == f"../checkpoints/{c1}"
    assert tree_of(mnt.path / ".sls" / "at" / when / "fs") == first
    assert os.listdir(mnt.path / ".sls" / "names") == ["before"]
    assert os.readlink(mnt.path / ".sls" / "names" / "before") == f"../checkpoints/{c1}"
    assert tree_of(mnt.path / ".sls" / "names" / "before" / "fs") == first
    with pytest.raises(OSError) as e:
        (mnt.path / ".sls" / "checkpoints" / str(c1) / "fs" / "extra").write_text("no")
    assert e.value.errno == errno.EROFS
    log = json.loads(sls("log", mnt.path, "--json", "-n", "0").stdout)["checkpoints"]
    assert any(c["id"] == c1 and c["tags"] == ["before"] for c in log)


def test_snapshot_of_a_directory_is_frozen(mnt):
    populate(mnt.path, 1)
    before = tree_of(mnt.path / "a")
    out = json.loads(sls("snapshot", mnt.path / "a", "--name", "s1", "--json").stdout)
    assert out["name"] == "s1"
    (mnt.path / "a" / "one").write_bytes(b"changed")
    snap = mnt.path / ".sls" / "snapshots" / "s1"
    assert tree_of(snap) == before
    assert os.listdir(mnt.path / ".sls" / "snapshots") == ["s1"]
    bad = sls("snapshot", mnt.path / "a", "--name", "s1", check=False)
    assert bad.returncode == 1 and "already exists" in bad.stderr


@pytest.mark.parametrize("source", ["live", "snapshot", "checkpoint"])
def test_clone_is_writable_independent_and_a_separate_device_for_links(mnt, source):
    populate(mnt.path, 1)
    expected = tree_of(mnt.path / "a")
    c1 = checkpoint(mnt)
    sls("snapshot", mnt.path / "a", "--name", "snap")
    src = {"live": mnt.path / "a",
           "snapshot": mnt.path / ".sls" / "snapshots" / "snap",
           "checkpoint": mnt.path / ".sls" / "checkpoints" / str(c1) / "fs" / "a"}[source]
    sls("clone", src, mnt.path / "copy")
    copy = mnt.path / "copy"
    assert tree_of(copy) == expected
    (copy / "one").write_bytes(b"clone only")
    (copy / "new").write_text("n")
    assert (mnt.path / "a" / "one").read_bytes() == expected["one"]
    assert not (mnt.path / "a" / "new").exists()
    with pytest.raises(OSError) as e:
        os.link(copy / "new", mnt.path / "hardlink")
    assert e.value.errno == errno.EXDEV
    with pytest.raises(OSError) as e:
        os.rename(copy / "new", mnt.path / "moved")
    assert e.value.errno == errno.EXDEV
    mnt.umount()
    mnt.mount()
    assert (copy / "one").read_bytes() == b"clone only"
    assert (mnt.path / "a" / "one").read_bytes() == expected["one"]


def test_removing_a_clone_drops_its_volume(mnt):
    populate(mnt.path, 1)
    sls("clone", mnt.path / "a", mnt.path / "copy")
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.path / "copy")
    assert e.value.errno == errno.ENOTEMPTY
    import shutil
    shutil.rmtree(mnt.path / "copy")
    assert not (mnt.path / "copy").exists()
    assert mnt.status()["volumes"] == ["main"]


def test_diff_between_checkpoints(mnt):
    populate(mnt.path, 1)
    c1 = checkpoint(mnt)
    (mnt.path / "a" / "one").write_bytes(b"other")
    (mnt.path / "added").write_text("new")
    (mnt.path / "a" / "b" / "two").unlink()
    c2 = checkpoint(mnt)
    out = json.loads(sls("diff", "--mount", mnt.path, str(c1), str(c2), "--json").stdout)
    assert out["added"] == ["added"]
    assert out["removed"] == ["a/b/two"]
    assert "a/one" in out["changed"]


def test_a_name_missing_from_a_checkpoint_stays_missing_there(mnt):
    (mnt.path / "f").write_text("x")
    old = mnt.path / ".sls" / "checkpoints" / str(checkpoint(mnt)) / "fs"
    for _ in range(2):                        # the second answer may be the kernel's cached one
        assert not (old / "later").exists()
    (mnt.path / "later").write_text("y")
    new = mnt.path / ".sls" / "checkpoints" / str(checkpoint(mnt)) / "fs"
    assert not (old / "later").exists()
    assert (new / "later").read_text() == "y"
    with pytest.raises(OSError) as e:
        (old / "later").write_text("no")
    assert e.value.errno == errno.EROFS


def test_a_clone_appears_where_its_name_was_just_looked_up_as_missing(mnt):
    populate(mnt.path, 1)
    copy = mnt.path / "copy"
    for _ in range(2):                        # the kernel now remembers "copy" as absent
        assert not copy.exists()
    sls("clone", mnt.path / "a", copy)
    assert copy.is_dir() and tree_of(copy) == tree_of(mnt.path / "a")


def test_stat_gives_sizes_in_the_unit_that_fits(mnt):
    (mnt.path / "data").write_bytes(os.urandom(3 * 2**20))
    sls("checkpoint", mnt.path)
    figures = json.loads(sls("stat", mnt.path, "--json").stdout)
    assert figures["logical_bytes"] == 3 * 2**20
    human = sls("stat", mnt.path).stdout
    assert "data: 3.0 MiB logical" in human and " 1 volume\n" in human, human
    assert f"{figures['checkpoints']} checkpoints" in human, human


@pytest.mark.parametrize("verb, name, says", [
    ("checkpoint", "latest", "name the newest checkpoints"),     # else 'latest' would stop meaning the newest
    ("checkpoint", "2026-12-01", "ISO-8601 time"),
    ("checkpoint", "42", "checkpoint id"),
    ("checkpoint", "x" * 256, "longer than 255 bytes"),
    ("checkpoint", " v1 ", "white space"),                       # looked up as 'v1': never found
    ("checkpoint", "web#2", "group's checkpoint number"),        # in a group's store: that group's #2
    ("snapshot", "x" * 256, "at most 255 bytes"),                # a name .sls/snapshots/ could not show
    ("snapshot", "tab\there", "control character"),
])
def test_a_name_that_would_be_read_as_something_else_is_refused(mnt, verb, name, says):
    (mnt.path / "d").mkdir()
    target = mnt.path / "d" if verb == "snapshot" else mnt.path
    refused = sls(verb, target, "--name", name, check=False)
    assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    assert "latest" in os.listdir(mnt.path / ".sls")
    if verb == "checkpoint":
        newest = checkpoint(mnt)
        assert os.readlink(mnt.path / ".sls" / "latest") == f"checkpoints/{newest}"
        assert json.loads(sls("diff", "--mount", mnt.path, "latest", str(newest), "--json").stdout)["b"] == newest
