"""The kernel's writeback cache (on by default): what users rely on still holds.

Writes now wait in the kernel's page cache until close, fsync, syncfs or the kernel's
own write-back. These tests check that the periodic checkpoint brings in writes to a
file that stays open (a SIGKILL then loses nothing older than about one interval), that
a SIGTERM'd daemon flushes before it unmounts, that a random mix of pwrite, O_APPEND,
truncate, holes and shared mmap gives the same bytes, size and mtime as ext4 (before
and after a remount), and that permission cases hold for an unprivileged writer
(a write-only file, partial pages, suid cleared by a write).
"""
from __future__ import annotations

import json
import mmap
import os
import random
import signal
import subprocess
import sys

from mount_helpers import pid_alive, probe_as_nobody, sls, wait_for

PAYLOAD = b"written, never closed nor fsynced\n" * 300

# writes PAYLOAD, says so, then keeps the file open until killed
HOLDER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, bytes.fromhex(sys.argv[2]))
print("written", flush=True)
time.sleep(600)
"""


def start_holder(path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), PAYLOAD.hex()],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "written\n"
    return holder


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=60)


def test_a_write_to_a_file_held_open_is_in_the_next_periodic_checkpoint(new_mount):
    mnt = new_mount("--checkpoint-interval", "10")
    holder = start_holder(mnt.path / "open")
    try:
        # the flush counted after `flushed` may have begun before the write; the next one
        # began after it: the daemon then has the write, and the first checkpoint that
        # leaves nothing dirty after that holds it
        flushed = mnt.status()["kernel_flushes"]
        wait_for(lambda: mnt.status()["kernel_flushes"] > flushed + 1, "a flush after the write", 30)
        before = mnt.status()["checkpoints_taken"]
        (mnt.path / "tick").touch()             # something for one more checkpoint to hold
        sealed = wait_for(lambda: (s := mnt.status())["checkpoints_taken"] > before
                          and not s["dirty"] and s, "a checkpoint after the flush", 30)
        wait_for(lambda: mnt.status()["durable"] >= sealed["head"],
                 f"checkpoint {sealed['head']} to become durable", 30)
        mnt.kill()
    finally:
        stop(holder)
    mnt.mount("--force")
    assert (mnt.path / "open").read_bytes() == PAYLOAD


def test_sigterm_flushes_what_the_kernel_holds_before_unmounting(new_mount):
    mnt = new_mount("--checkpoint-interval", "0")      # no periodic checkpoints
    holder = start_holder(mnt.path / "open")
    try:
        os.kill(mnt.pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(mnt.pid), "the daemon to stop", 60)
    finally:
        stop(holder)
    mnt.mount("--force")
    assert (mnt.path / "open").read_bytes() == PAYLOAD


SMALL_WRITER = r"""
import os, sys
fd = os.open(sys.argv[1] + "/held", os.O_CREAT | os.O_WRONLY, 0o644)
i = 0
while True:
    os.pwrite(fd, b"x" * 100, (i * 100) % 1_000_000)
    i += 1
    if i % 50 == 0:
        with open(sys.argv[1] + f"/f{i % 500}", "wb") as f:
            f.write(b"y" * 5000)
"""


def test_a_daemon_killed_while_flushing_the_kernel_cache_exits(new_mount):
    # small writes keep a syncfs before nearly every checkpoint; a syncfs made by a
    # thread of the daemon kept about 1 in 7 SIGKILLed daemons from ever exiting
    mnt = new_mount("--checkpoint-interval", "10")
    for trial in range(8):
        writer = subprocess.Popen([sys.executable, "-c", SMALL_WRITER, str(mnt.path)],
                                  stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: (mnt.path / "f50").exists(), "the writer to get going", 30)
            mnt.kill()                          # waits (60 s at most) for the daemon to go
        finally:
            stop(writer)
        mnt.mount("--force")
        (mnt.path / "f50").unlink(missing_ok=True)    # not fsynced: may be lost


def test_sls_checkpoint_holds_writes_to_a_file_still_open(new_mount):
    mnt = new_mount("--checkpoint-interval", "0")      # no periodic flushes
    holder = start_holder(mnt.path / "open")
    try:
        out = sls("checkpoint", mnt.path, "--json").stdout
        checkpoint = json.loads(out)["checkpoint"]
        frozen = mnt.path / ".sls" / "checkpoints" / str(checkpoint) / "fs" / "open"
        assert frozen.read_bytes() == PAYLOAD
    finally:
        stop(holder)


def apply_random_ops(root, seed: int) -> tuple[bytes, int, int]:
    """The same seeded mix of writes on `root`/f: returns (bytes, size, mtime_ns)."""
    rng = random.Random(seed)
    path = os.path.join(root, "f")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    appender = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        for step in range(300):
            kind = rng.choice(["pwrite", "pwrite", "append", "truncate", "hole", "mmap", "read"])
            size = os.fstat(fd).st_size
            if kind == "pwrite":
                off = rng.randrange(0, size + 10_000)
                os.pwrite(fd, rng.randbytes(rng.choice([1, 100, 4095, 4096, 5000, 70_000])), off)
            elif kind == "append":
                os.write(appender, b"<%d>" % step * rng.randrange(1, 500))
            elif kind == "truncate":
                os.ftruncate(fd, rng.randrange(0, size + 300_000))
            elif kind == "hole":
                os.pwrite(fd, b"far", size + rng.randrange(1, 3 * 128 * 1024))
            elif kind == "mmap" and size > 0:
                with mmap.mmap(fd, size, mmap.MAP_SHARED) as m:
                    off = rng.randrange(0, size)
                    piece = rng.randbytes(min(3000, size - off))
                    m[off:off + len(piece)] = piece
            elif kind == "read" and size > 0:
                off = rng.randrange(0, size)
                os.pread(fd, rng.randrange(1, 200_000), off)
        os.fsync(fd)
    finally:
        os.close(appender)
        os.close(fd)
    with open(path, "rb") as f:
        data = f.read()
    st = os.stat(path)
    return data, st.st_size, st.st_mtime_ns


def test_random_writes_truncates_appends_and_mmaps_match_ext4(mnt, workdir):
    plain = workdir / "plain"
    plain.mkdir()
    kept = {}
    for seed in (1, 2, 3):
        (mnt.path / str(seed)).mkdir()
        (plain / str(seed)).mkdir()
        data, size, mtime = apply_random_ops(mnt.path / str(seed), seed)
        expected, expected_size, _ = apply_random_ops(plain / str(seed), seed)
        assert size == expected_size == len(expected)
        assert data == expected, f"seed {seed}: contents differ from ext4"
        kept[seed] = (mtime, expected)
    mnt.umount()
    mnt.mount()
    for seed, (mtime, expected) in kept.items():
        path = mnt.path / str(seed) / "f"
        assert path.read_bytes() == expected, f"seed {seed}: contents differ after a remount"
        assert os.stat(path).st_mtime_ns == mtime, "the kernel's mtime was not kept"


WRITE_ONLY_PROBE = r"""
import errno, os, sys
root = sys.argv[1]
def attempt(action):
    try:
        return action()
    except OSError as exc:
        return errno.errorcode[exc.errno]
def partial_writes(name):
    fd = os.open(os.path.join(root, name), os.O_WRONLY)
    try:
        os.pwrite(fd, b"xyz", 5000)           # mid-page: the kernel must read the page
        os.pwrite(fd, b"end", 70_001)          # past the end: a hole, then a partial page
        return "ok"
    finally:
        os.close(fd)
def append(name):
    fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_APPEND)
    try:
        return os.write(fd, b"tail")
    finally:
        os.close(fd)
print(repr({
    "write_only": attempt(lambda: partial_writes("wo")),
    "read_through_write_only_fd": attempt(lambda: os.pread(os.open(os.path.join(root, "wo"), os.O_WRONLY), 1, 0)),
    "append": attempt(lambda: append("wo")),
    "read_write_only": attempt(lambda: open(os.path.join(root, "wo"), "rb").read()),
    "write_setuid": attempt(lambda: append("suid")),
}))
"""


def test_unprivileged_writer_of_a_write_only_file(new_mount):
    mnt = new_mount("--allow-other")
    os.chmod(mnt.path, 0o755)
    (mnt.path / "wo").write_bytes(b"A" * 10_000)
    os.chmod(mnt.path / "wo", 0o622)
    (mnt.path / "suid").write_bytes(b"B" * 100)
    os.chmod(mnt.path / "suid", 0o4777)

    assert probe_as_nobody(WRITE_ONLY_PROBE, mnt.path) == {"write_only": "ok", "read_through_write_only_fd": "EBADF", "append": 4,
                                "read_write_only": "EACCES", "write_setuid": 4}
    expected = bytearray(b"A" * 10_000)
    expected[5000:5003] = b"xyz"
    expected += bytes(70_001 - len(expected)) + b"endtail"
    assert (mnt.path / "wo").read_bytes() == expected
    assert os.stat(mnt.path / "suid").st_mode & 0o7777 == 0o777, "a write must clear set-user-ID"
    mnt.umount()
    mnt.mount()
    assert (mnt.path / "wo").read_bytes() == expected
    assert os.stat(mnt.path / "suid").st_mode & 0o7777 == 0o777


SET_ID_PROBE = r"""
import ctypes, os, sys
root = sys.argv[1]
with open(os.path.join(root, "written"), "ab") as f:
    f.write(b"w")
with open(os.path.join(root, "setgid"), "ab") as f:
    f.write(b"w")
os.truncate(os.path.join(root, "truncated"), 10)
os.close(os.open(os.path.join(root, "opened_trunc"), os.O_WRONLY | os.O_TRUNC))
with open(os.path.join(root, "allocated"), "r+b") as f:
    os.posix_fallocate(f.fileno(), 0, 4096)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
with open(os.path.join(root, "punched"), "r+b") as f:
    assert libc.fallocate(f.fileno(), 3, 0, 50) == 0, ctypes.get_errno()   # PUNCH_HOLE | KEEP_SIZE
print("{}")
"""


def test_set_id_bits_after_writes_and_truncations(new_mount):
    """The daemon drops set-user-ID and set-group-ID bits itself (the kernel leaves it
    to the daemon: FUSE_HANDLE_KILLPRIV_V2, mount.init_flags): a write, truncate,
    O_TRUNC open or fallocate (as ext4's) by an unprivileged user drops them, root's write
    keeps them (as root holds CAP_FSETID), and what is dropped stays dropped after a
    remount."""
    mnt = new_mount("--allow-other")
    os.chmod(mnt.path, 0o755)
    modes = {"written": 0o4777, "setgid": 0o2777, "truncated": 0o6777, "opened_trunc": 0o4777,
             "allocated": 0o4777, "punched": 0o6777, "by_root": 0o4755}
    for name, mode in modes.items():
        (mnt.path / name).write_bytes(b"B" * 100)
        os.chmod(mnt.path / name, mode)
    with open(mnt.path / "by_root", "ab") as f:
        f.write(b"r")
    probe_as_nobody(SET_ID_PROBE, mnt.path)
    expected = {"written": 0o777, "setgid": 0o777, "truncated": 0o777, "opened_trunc": 0o777,
                "allocated": 0o777, "punched": 0o777, "by_root": 0o4755}
    sizes = {"written": 101, "setgid": 101, "truncated": 10, "opened_trunc": 0, "allocated": 4096,
             "punched": 100, "by_root": 101}

    def seen() -> tuple[dict, dict]:
        stats = {name: os.stat(mnt.path / name) for name in modes}
        return ({name: s.st_mode & 0o7777 for name, s in stats.items()},
                {name: s.st_size for name, s in stats.items()})
    assert seen() == (expected, sizes)
    mnt.umount()
    mnt.mount()
    assert seen() == (expected, sizes)
