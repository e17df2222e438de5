"""`sls diff` of two checkpoints: computed from the store's trees (mount.treediff), it
must list what a comparison of the two checkpoints' directory walks lists, and also the
changes a walk of sizes and times cannot see."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

from mount_helpers import sls


def checkpoint(mnt) -> int:
    """A named checkpoint (retention keeps it: a mount checkpoints itself every 10 ms)."""
    checkpoint.made += 1
    return json.loads(sls("checkpoint", mnt.path, "--name", f"t{checkpoint.made}", "--json").stdout)["checkpoint"]


checkpoint.made = 0


def store_diff(mnt, a, b) -> dict:
    out = json.loads(sls("diff", "--mount", mnt.path, str(a), str(b), "--json").stdout)
    return {key: out[key] for key in ("added", "removed", "changed")}


def walk_diff(mnt, a: int, b: int) -> dict:
    """The same comparison by walking both checkpoints' fs/ trees (sls diff DIR DIR)."""
    fs = mnt.path / ".sls" / "checkpoints"
    out = json.loads(sls("diff", fs / str(a) / "fs", fs / str(b) / "fs", "--json").stdout)
    return {key: out[key] for key in ("added", "removed", "changed")}


def test_a_diff_lists_adds_removes_changes_renames_and_links(mnt):
    root = mnt.path
    (root / "src" / "lib").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int main() {}\n")
    (root / "src" / "lib" / "util.c").write_text("util\n")
    (root / "src" / "lib" / "old.c").write_text("old\n")
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("a\n")
    (root / "same").write_text("unchanged\n")
    os.link(root / "src" / "main.c", root / "main-link.c")
    before = checkpoint(mnt)
    (root / "src" / "main.c").write_text("int main() { return 1; }\n")      # changed, under both names
    (root / "src" / "lib" / "old.c").unlink()
    (root / "src" / "lib" / "new.c").write_text("new\n")
    os.rename(root / "docs", root / "manual")                                # every path under it moves
    os.symlink("src/main.c", root / "entry")
    os.setxattr(root / "src" / "lib" / "util.c", "user.note", b"reviewed")  # a change no walk sees
    (root / "same").read_text()                                             # a read is not a change
    after = checkpoint(mnt)
    found = store_diff(mnt, before, after)
    assert found == {
        "added": ["entry", "manual", "manual/a.txt", "src/lib/new.c"],
        "removed": ["docs", "docs/a.txt", "src/lib/old.c"],
        "changed": ["main-link.c", "src/lib", "src/lib/util.c", "src/main.c"],
    }
    walked = walk_diff(mnt, before, after)
    walked["changed"] = sorted(set(walked["changed"]) | {"src/lib/util.c"})
    assert found == walked


def test_a_rewrite_that_keeps_size_and_mtime_is_still_a_change(mnt):
    """rsync -t, tar and cp -p put an old mtime back: the data changed all the same."""
    target = mnt.path / "data.bin"
    target.write_bytes(b"A" * 100_000)
    stamp = os.stat(target)
    before = checkpoint(mnt)
    with open(target, "r+b") as f:
        f.seek(50_000)
        f.write(b"B")
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    after = checkpoint(mnt)
    assert walk_diff(mnt, before, after)["changed"] == []                  # what a walk of sizes and times sees
    assert store_diff(mnt, before, after) == {"added": [], "removed": [], "changed": ["data.bin"]}


def test_a_clone_is_compared_inside(mnt):
    (mnt.path / "proj").mkdir()
    (mnt.path / "proj" / "f").write_text("1")
    sls("clone", mnt.path / "proj", mnt.path / "copy")
    before = checkpoint(mnt)
    (mnt.path / "copy" / "f").write_text("2")
    (mnt.path / "copy" / "g").write_text("new")
    after = checkpoint(mnt)
    assert store_diff(mnt, before, after) == {"added": ["copy/g"], "removed": [], "changed": ["copy", "copy/f"]}
    assert store_diff(mnt, before, after) == walk_diff(mnt, before, after)
    shutil.rmtree(mnt.path / "copy")
    gone = checkpoint(mnt)
    assert store_diff(mnt, after, gone)["removed"] == ["copy", "copy/f", "copy/g"]


def test_random_changes_are_listed_as_a_walk_lists_them(mnt):
    """Several rounds of random creates, writes, renames, deletes, links and mkdirs: each
    pair of checkpoints gives the same lists both ways (and in reverse order)."""
    rng = random.Random(1234)
    root = mnt.path
    ids = [checkpoint(mnt)]
    for _ in range(4):
        for _ in range(40):
            dirs = [root] + [p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]
            files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
            action = rng.choice(["create", "create", "write", "mkdir", "rename", "unlink", "rmtree", "link",
                                 "symlink", "chmod"])
            where = rng.choice(dirs)
            name = f"n{rng.randrange(1000)}"
            if (where / name).exists() or (where / name).is_symlink():
                continue
            if action == "create":
                (where / name).write_bytes(os.urandom(rng.randrange(1, 300_000)))
            elif action == "mkdir":
                (where / name).mkdir()
            elif action == "symlink":
                os.symlink(name, where / name)
            elif files and action == "write":
                with open(rng.choice(files), "r+b") as f:
                    f.write(os.urandom(rng.randrange(1, 5000)))
            elif files and action == "rename":
                os.rename(rng.choice(files), where / name)
            elif files and action == "unlink":
                rng.choice(files).unlink()
            elif files and action == "link":
                os.link(rng.choice(files), where / name)
            elif files and action == "chmod":
                os.chmod(rng.choice(files), rng.choice([0o600, 0o644, 0o755]))
            elif action == "rmtree" and where != root:
                shutil.rmtree(where)
        ids.append(checkpoint(mnt))
    pairs = list(zip(ids, ids[1:])) + [(ids[0], ids[-1]), (ids[-1], ids[1])]
    for a, b in pairs:
        assert store_diff(mnt, a, b) == walk_diff(mnt, a, b), (a, b)


def test_diff_names_checkpoints_like_the_log_and_says_what_is_wrong(mnt):
    (mnt.path / "f").write_text("1")
    sls("checkpoint", mnt.path, "--name", "first")
    (mnt.path / "f").write_text("22")
    checkpoint(mnt)
    inside = sls("diff", "first", "latest", cwd=mnt.path)          # the mount of the current directory
    assert inside.stdout.split() == ["M", "f"]
    wrong = sls("diff", "--mount", mnt.path, "first", "no-such-name", check=False)
    assert wrong.returncode != 0 and "no-such-name" in wrong.stderr
    outside = sls("diff", "first", "latest", check=False, cwd="/")
    assert outside.returncode != 0 and "--mount" in outside.stderr


def test_a_tree_deeper_than_pythons_recursion_limit(mnt):
    """Deep paths are POSIX (the mount serves them): so is their diff."""
    deep = mnt.path
    for _ in range(1200):
        deep = deep / "d"
        os.mkdir(deep)                                    # (os.makedirs would stat the whole path each time)
    before = checkpoint(mnt)
    (deep / "leaf").write_text("x")
    after = checkpoint(mnt)
    leaf = "/".join(["d"] * 1200 + ["leaf"])
    assert store_diff(mnt, before, after) == {"added": [leaf], "removed": [], "changed": [leaf[:-5]]}
    assert store_diff(mnt, after, before) == {"added": [], "removed": [leaf], "changed": [leaf[:-5]]}
    subprocess.run(["rm", "-rf", str(mnt.path / "d")], check=True)
    gone = checkpoint(mnt)
    assert len(store_diff(mnt, after, gone)["removed"]) == 1201


def test_names_that_are_not_utf8_come_back_as_their_bytes(mnt):
    """File names are bytes: --json gives a byte that is not UTF-8 as a surrogate escape,
    which os.fsencode turns back into the very name (from the store's trees and from a walk)."""
    names = [b"caf\xe9", b"bad\xffname", "ünïcode".encode()]
    before = checkpoint(mnt)
    for name in names:
        (mnt.path / os.fsdecode(name)).write_bytes(name)
    after = checkpoint(mnt)
    for found in (store_diff(mnt, before, after), walk_diff(mnt, before, after)):
        assert sorted(os.fsencode(name) for name in found["added"]) == sorted(names), found


def test_a_store_no_daemon_serves_is_diffed_from_its_trees_as_its_daemon_does(mnt):
    (mnt.path / "proj").mkdir()
    (mnt.path / "proj" / "f").write_text("1")
    (mnt.path / "gone").write_text("x")
    sls("clone", mnt.path / "proj", mnt.path / "copy")      # a clone's volume: compared inside, as mounted
    before = checkpoint(mnt)
    (mnt.path / "copy" / "f").write_text("2")
    (mnt.path / "gone").unlink()
    (mnt.path / "new").write_text("y")
    after = checkpoint(mnt)
    served = json.loads(sls("diff", "--store", mnt.store, f"t{checkpoint.made - 1}", str(after), "--json").stdout)
    mnt.umount()
    offline = json.loads(sls("diff", "--store", mnt.store, f"t{checkpoint.made - 1}", str(after), "--json").stdout)
    assert offline == served and offline["a"] == before
    assert (offline["added"], offline["removed"], offline["changed"]) == (["new"], ["gone"], ["copy/f"]), offline
    wrong = sls("diff", "--store", mnt.store, "nosuch", str(after), check=False)
    assert wrong.returncode == 1 and "nosuch" in wrong.stderr and wrong.stderr.count("\n") == 1, wrong.stderr
