"""Run by test_attr_cache.py in a child process: serve a mount in-process, count the
GETATTR (and GETXATTR) requests that reach the daemon while a client process stats
(and writes) files, and print what the client saw and the counts as JSON.

In-process so that the requests can be counted at the handler; the client is a separate
process, because a process that serves a FUSE mount must not touch it from its own thread.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

from objectstore import Store

from mount import FileSystem
from scenario_end import finish_scenario, unmount_scenario

# argv: mount point. Says "ready <phase>" and waits for a line before each phase, so the
# daemon can read its counter between phases; prints its observations as JSON at the end.
CLIENT = r"""
import json, os, struct, subprocess, sys, time
mnt = sys.argv[1]
seen = {}
def phase(name):
    print("ready", name, flush=True)
    sys.stdin.readline()
def st(path):
    s = os.stat(path)
    return [s.st_size, s.st_mode & 0o7777, s.st_nlink, s.st_mtime_ns, s.st_ctime_ns]
with open(f"{mnt}/a", "wb") as f:
    f.write(b"x" * 5000)
os.link(f"{mnt}/a", f"{mnt}/b")
st(f"{mnt}/a"), st(f"{mnt}/b")                 # after the close: may reach the daemon
phase("unchanged")
seen["unchanged"] = [st(f"{mnt}/a") for _ in range(200)] + [st(f"{mnt}/b") for _ in range(200)]
phase("changed")
before = st(f"{mnt}/b")
time.sleep(0.1)              # past the kernel's coarse timestamp granularity: mtime must move
with open(f"{mnt}/a", "ab") as f:                    # through the other name
    f.write(b"y" * 3000)
after_write = st(f"{mnt}/b")
subprocess.run([sys.executable, "-c", "import os, sys; os.chmod(sys.argv[1], 0o600)", f"{mnt}/a"],
               check=True)                           # another process, the other name
after_chmod = st(f"{mnt}/b")
os.unlink(f"{mnt}/a")
after_unlink = st(f"{mnt}/b")
seen["changed"] = [before, after_write, after_chmod, after_unlink]
phase("writes")                                      # small writes to a new file
fd = os.open(f"{mnt}/w", os.O_CREAT | os.O_WRONLY, 0o644)
for i in range(100):
    os.pwrite(fd, b"z" * 100, i * 100)
os.close(fd)
phase("capability")                                  # a write removes file capabilities
with open(f"{mnt}/cap", "wb") as f:
    f.write(b"c")
os.setxattr(f"{mnt}/cap", "security.capability", struct.pack("<5I", 0x02000000, 0, 0, 0, 0))
had = "security.capability" in os.listxattr(f"{mnt}/cap")
with open(f"{mnt}/cap", "ab") as f:
    f.write(b"d")
seen["capability"] = [had, "security.capability" in os.listxattr(f"{mnt}/cap")]
seen["written"] = [os.stat(f"{mnt}/w").st_size, open(f"{mnt}/cap", "rb").read().decode()]
print(json.dumps(seen), flush=True)
"""


def main(workdir: Path) -> None:
    store = Store.init(workdir / "store")
    mountpoint = workdir / "mnt"
    fs = FileSystem(store, "main", checkpoint_interval_ms=None, writeback_cache="--writeback" in sys.argv)
    counts = {"getattr": 0, "getxattr": 0}
    for name in counts:
        _count(fs.ops, name, counts)
    results: dict = {"getattrs": {}, "getxattrs": {}}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(fs.serve, str(mountpoint))
            client = await trio.lowlevel.open_process(
                [sys.executable, "-c", CLIENT, str(mountpoint)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            lines = _lines(client.stdout)
            try:
                phase, starts = None, dict(counts)
                async for line in lines:
                    if phase is not None:
                        for name, start in starts.items():
                            results[name + "s"][phase] = counts[name] - start
                    if not line.startswith("ready "):
                        results["client"] = json.loads(line)
                        break
                    phase, starts = line.split()[1], dict(counts)
                    await client.stdin.send_all(b"go\n")
            finally:
                with trio.move_on_after(60):
                    await client.wait()
                if client.returncode is None:
                    client.kill()
            results["client_status"] = client.returncode
            results["kill_priv_v2"] = fs.init_relay.granted
            await fs.flush_kernel_writes()
            await unmount_scenario(mountpoint)

    finish_scenario(fs, store, run, results)


def _count(ops, name: str, counts: dict) -> None:
    """Count the calls of handler `name` of `ops` in counts[name]."""
    handler = getattr(ops, name)

    async def counting(*args):
        counts[name] += 1
        return await handler(*args)
    setattr(ops, name, counting)


async def _lines(stream):
    buffer = b""
    while True:
        while b"\n" not in buffer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        yield line.decode()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
