"""Model-based test of the mount: random sequences of file-system calls run on a slsfs
mount and, as the model, on a plain directory of the local disk; after every call both
give the same result (or the same errno) and hold the same tree, byte for byte, also
after an unmount and a new mount. Snapshots and checkpoints taken along the way must still
show the tree as it was then.

Hypothesis picks the calls (derandomized: CI runs the same sequences every time;
SLSFS_FS_MODEL_EXAMPLES=N explores N random ones; a failure is reported as found, not shrunk:
replaying calls on a real mount over and over takes minutes). Each example works in a fresh directory of one
mount. Names come from a small set so that calls collide (rename over, link to, unlink
what is open). Simplifications: timestamps and directories' link counts are not compared
(ext4 and slsfs may differ where POSIX lets them); EEXIST and ENOTEMPTY count as one
errno (POSIX allows either for a non-empty directory).
"""
from __future__ import annotations

import errno
import itertools
import mmap
import os
import shutil
import stat

from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from mount_helpers import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate, sls

NAMES = st.sampled_from(["a", "b", "d/a", "d/b", "d/e/a", "e"])
DIRS = st.sampled_from(["d", "d/e", "e", "f"])
DATA = st.binary(min_size=0, max_size=9000)
OFFSETS = st.sampled_from([0, 1, 4095, 4096, 5000, 70000])
SAME_ERRNO = {errno.ENOTEMPTY: errno.EEXIST}
EXPLORE = os.environ.get("SLSFS_FS_MODEL_EXAMPLES")     # N: N random examples, not the fixed 12
EXAMPLES = int(EXPLORE or 12)
_example = itertools.count()
FALLOCATE_MODES = st.sampled_from([0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                   FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE])
LENGTHS = st.sampled_from([1, 4095, 4096, 9000, 70000])


def outcome(call, *args):
    """What a call gave: its result, or the errno it failed with."""
    try:
        return ("ok", call(*args))
    except OSError as exc:
        return ("errno", SAME_ERRNO.get(exc.errno, exc.errno))


def tree(root: str) -> dict:
    """Everything a user can see of a tree, timestamps and directory link counts aside."""
    seen = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(here, name)
            st_ = os.lstat(path)
            key = os.path.relpath(path, root)
            if stat.S_ISLNK(st_.st_mode):
                seen[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                seen[key] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                with open(path, "rb") as f:
                    seen[key] = ("file", stat.S_IMODE(st_.st_mode), st_.st_nlink, st_.st_size, f.read())
    return seen


def _write(path: str, offset: int, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _append(path: str, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def _fallocate(path: str, mode: int, offset: int, length: int) -> None:
    """fallocate(2) of a file by path (made if missing): any mode, e.g. a hole punched or a
    range zeroed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fallocate(fd, mode, offset, length)
    finally:
        os.close(fd)


def _copy_range(src: str, dst: str, offset: int, length: int) -> int:
    """copy_file_range(2) of `length` bytes of `src` from its start to `offset` of `dst`
    (made if missing)."""
    source = os.open(src, os.O_RDONLY)
    try:
        target = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            return os.copy_file_range(source, target, length, 0, offset)
        finally:
            os.close(target)
    finally:
        os.close(source)


def _map_write(path: str, offset: int, data: bytes) -> None:
    """Write through a shared writable mapping of the file (as big as it already is)."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(f.fileno(), size) as m:
            start = offset % size
            piece = data[: size - start]
            m[start:start + len(piece)] = piece
            m.flush()


class FileSystemModel(RuleBasedStateMachine):
    def __init__(self, mount, model_root):
        super().__init__()
        n = next(_example)
        self.mount = mount
        self.live = os.path.join(mount.path, f"ex{n}")
        self.model = os.path.join(model_root, f"ex{n}")
        os.mkdir(self.live)
        os.mkdir(self.model)
        self.open_files: list[tuple[int, int]] = []   # (fd on the mount, fd in the model)
        self.kept: list[tuple[str, dict]] = []         # (path of a snapshot/checkpoint, tree then)
        self.remounted = False

    def both(self, call, *args, paths=1):
        """Run call on the mount and on the model (its first `paths` arguments are paths
        relative to the example's directory); both outcomes must agree."""
        live = outcome(call, *[os.path.join(self.live, a) for a in args[:paths]], *args[paths:])
        model = outcome(call, *[os.path.join(self.model, a) for a in args[:paths]], *args[paths:])
        assert live == model, f"{call.__name__}{args}: slsfs gave {live}, the local disk {model}"

    @rule(path=NAMES, offset=OFFSETS, data=DATA)
    def write(self, path, offset, data):
        self.both(_write, path, offset, data)

    @rule(path=NAMES, data=DATA)
    def append(self, path, data):
        self.both(_append, path, data)

    @rule(path=NAMES, size=st.sampled_from([0, 1, 4096, 4097, 100000]))
    def truncate(self, path, size):
        self.both(os.truncate, path, size)

    @rule(path=NAMES, offset=OFFSETS, data=DATA)
    def map_write(self, path, offset, data):
        self.both(_map_write, path, offset, data)

    @rule(path=NAMES, mode=FALLOCATE_MODES, offset=OFFSETS, length=LENGTHS)
    def fallocate(self, path, mode, offset, length):
        self.both(_fallocate, path, mode, offset, length)

    @rule(src=NAMES, data=DATA, dst=NAMES, offset=OFFSETS, length=LENGTHS)
    def copy_range(self, src, data, dst, offset, length):
        """A file written (at its start) then copied from into another, or into itself."""
        self.both(_write, src, 0, data)
        self.both(_copy_range, src, dst, offset, length, paths=2)

    @rule(path=DIRS)
    def mkdir(self, path):
        self.both(os.mkdir, path)

    @rule(path=DIRS)
    def rmdir(self, path):
        self.both(os.rmdir, path)

    @rule(path=NAMES)
    def unlink(self, path):
        self.both(os.unlink, path)

    @rule(src=st.one_of(NAMES, DIRS), dst=st.one_of(NAMES, DIRS))
    def rename(self, src, dst):
        self.both(os.rename, src, dst, paths=2)

    @rule(src=NAMES, dst=NAMES)
    def link(self, src, dst):
        self.both(os.link, src, dst, paths=2)

    @rule(points_to=st.sampled_from(["a", "../b", "nowhere"]), path=NAMES)
    def symlink(self, points_to, path):
        self.both(lambda link_path: os.symlink(points_to, link_path), path)

    @rule(path=NAMES, mode=st.sampled_from([0o600, 0o644, 0o755, 0o4711]))
    def chmod(self, path, mode):
        self.both(os.chmod, path, mode)

    @precondition(lambda self: len(self.open_files) < 3)
    @rule(path=NAMES)
    def open_and_keep(self, path):
        """Open a file and keep it open (it may be unlinked or renamed meanwhile)."""
        live = outcome(os.open, os.path.join(self.live, path), os.O_RDWR)
        model = outcome(os.open, os.path.join(self.model, path), os.O_RDWR)
        assert (live[0], model[0]) in (("ok", "ok"), ("errno", "errno")), (live, model)
        if live[0] == "ok":
            self.open_files.append((live[1], model[1]))
        else:
            assert live == model

    @precondition(lambda self: self.open_files)
    @rule(data=DATA, offset=OFFSETS, which=st.integers(0, 2))
    def write_to_kept(self, data, offset, which):
        """A write through a kept fd, then its whole contents read back through it."""
        live, model = self.open_files[which % len(self.open_files)]
        assert os.pwrite(live, data, offset) == os.pwrite(model, data, offset)
        assert os.fstat(live).st_size == os.fstat(model).st_size
        assert os.pread(live, 200000, 0) == os.pread(model, 200000, 0)

    @precondition(lambda self: len(self.kept) < 2)
    @rule()
    def snapshot(self):
        name = os.path.basename(self.live) + f"s{len(self.kept)}"
        sls("snapshot", self.live, "--name", name)
        self.kept.append((os.path.join(self.mount.path, ".sls", "snapshots", name), tree(self.model)))

    @precondition(lambda self: len(self.kept) < 2)
    @rule()
    def checkpoint(self):
        number = int(sls("checkpoint", self.mount.path, "--json").stdout.split('"checkpoint":')[1].split(",")[0])
        there = os.path.join(self.mount.path, ".sls", "checkpoints", str(number), "fs", os.path.basename(self.live))
        self.kept.append((there, tree(self.model)))

    @precondition(lambda self: not self.remounted)
    @rule()
    def remount(self):
        """Unmount (the kept files closed first: `sls umount` refuses while files are open)
        and mount again: the tree is the one written."""
        self.close_kept()
        self.mount.umount()
        self.mount.mount()
        self.remounted = True

    def close_kept(self):
        for live, model in self.open_files:
            os.close(live)
            os.close(model)
        self.open_files.clear()

    @invariant()
    def same_tree(self):
        assert tree(self.live) == tree(self.model)

    def teardown(self):
        self.close_kept()
        for path, then in self.kept:
            assert tree(path) == then, f"{path} no longer shows the tree as it was"
        shutil.rmtree(self.live, ignore_errors=True)
        shutil.rmtree(self.model, ignore_errors=True)


def test_the_mount_behaves_like_the_local_disk(mnt, workdir):
    model_root = workdir / "model"
    model_root.mkdir()
    run_state_machine_as_test(lambda: FileSystemModel(mnt, str(model_root)), settings=settings(
        max_examples=EXAMPLES, stateful_step_count=40, deadline=None, derandomize=not EXPLORE, database=None,
        phases=[Phase.generate], suppress_health_check=list(HealthCheck)))   # no shrinking: slow on a mount
