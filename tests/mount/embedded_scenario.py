"""Run by test_inprocess_api.py in a child process: embed FileSystem in a trio loop the way
the persistence-group daemon does, and print what it observed as JSON.

A child process, because a process that serves a FUSE mount must never touch that mount
from the thread that serves it, nor exit while one of its own threads waits on it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from objectstore import Store

from mount import FileSystem
from mount.history import VDir, VFile


# dirty pages only a syncfs sends: a shared mapping, and (with the writeback cache) the
# write() of a file that stays open
MMAP_WRITER = r"""
import mmap, os, sys
path = sys.argv[1]
with open(path, "wb") as f:
    f.write(b"\\0" * 8192)
f = open(path, "r+b")
m = mmap.mmap(f.fileno(), 8192, mmap.MAP_SHARED)
m[:11] = b"from mmap!!"
held = os.open(path + ".held", os.O_CREAT | os.O_WRONLY, 0o644)
os.write(held, b"held open")
print("mapped", flush=True)
sys.stdin.readline()
"""


# two fsyncs of a file kept open (its close would send its pages anyway), then a
# directory fsync: each must have handed the bytes before it to the daemon when it returns
FSYNCER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"fsync")
os.fsync(fd)
os.write(fd, b"ed")
os.fdatasync(fd)
directory = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY)
os.fsync(directory)
print("synced", flush=True)
sys.stdin.readline()
"""


def syncfs_helpers() -> int:
    """How many syncfs helpers (mount.flusher) this process has started and not ended."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        count += int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"flusher.py" in cmdline
    return count


def main(workdir: Path, writeback: bool, helper: bool, fsync_commits: bool, helper_on_demand: bool) -> None:
    """With `writeback`, the kernel's writeback cache is on; with `helper`, the kernel is
    drained through the syncfs helper, asked from a worker thread as a group daemon's
    tracer would; `fsync_commits` is FileSystem's (a group daemon's is False);
    `helper_on_demand`: serve(syncfs_helper=False), as a group daemon serves."""
    store = Store.init(workdir / "store")
    mountpoint = workdir / "mnt"
    fs = FileSystem(store, "main", checkpoint_interval_ms=None, writeback_cache=writeback,
                    fsync_commits=fsync_commits)
    fs.history.extensions["procs"] = lambda commit: VDir(
        lambda: {"note.txt": VFile(lambda: f"procs of {commit.id}\n".encode())})
    results: dict = {}
    mapping: list = []

    def write_through_mmap() -> None:
        # A child process: touching a mapping of our own mount while holding the GIL
        # would deadlock against the thread that must serve the page fault.
        child = subprocess.Popen([sys.executable, "-c", MMAP_WRITER, str(mountpoint / "shared")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "mapped"
        mapping.append(child)                 # still mapped and dirty: only syncfs sends it

    def read_back(commit_id: int) -> None:
        base = mountpoint / ".sls" / "checkpoints" / str(commit_id)
        results["old"] = (base / "fs" / "shared").read_bytes()[:11].decode()
        results["held"] = (base / "fs" / "shared.held").read_bytes().decode()
        results["fsynced"] = (base / "fs" / "fsynced").read_bytes().decode()
        results["procs"] = (base / "procs" / "note.txt").read_text()
        for child in mapping:
            child.communicate("done\n", timeout=60)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(fs.serve, str(mountpoint), syncfs_helper=not helper_on_demand))
            results["helpers_at_mount"] = syncfs_helpers()
            head = store.head.id
            fsyncer = subprocess.Popen([sys.executable, "-c", FSYNCER, str(mountpoint / "fsynced")],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert await trio.to_thread.run_sync(fsyncer.stdout.readline) == "synced\n"
            entry = fs.main.lookup(fs.main.root_ino, b"fsynced")
            results["fsync"] = {"commits": store.head.id - head, "data_in_daemon": fs.dirty,
                                "daemon_has": bytes(fs.main.read(entry.ino, 0, 100)).decode()}
            await trio.to_thread.run_sync(lambda: fsyncer.communicate("done\n", timeout=60))
            await trio.to_thread.run_sync(write_through_mmap)
            if helper:
                token = trio.lowlevel.current_trio_token()
                await trio.to_thread.run_sync(
                    lambda: trio.from_thread.run(fs.sync_kernel_cache, trio_token=token))
            else:
                await fs.drain_kernel_cache(str(mountpoint))
            results["helpers_after_sync"] = syncfs_helpers()
            fs.seal()
            image = store.tree()
            image.put(b"pid", b"1234")
            commit = fs.checkpoint("group checkpoint", roots={"procs/demo": image.flush()})
            results["dirty_after_commit"] = fs.dirty
            await trio.to_thread.run_sync(read_back, commit.id)
            await trio.to_thread.run_sync(
                lambda: subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True))

    try:
        trio.run(run)
        fs.close()
        results["roots"] = sorted(store.head.roots)
    finally:
        store.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--writeback" in sys.argv[2:], "--helper" in sys.argv[2:],
         "--no-fsync-commits" not in sys.argv[2:], "--helper-on-demand" in sys.argv[2:])
