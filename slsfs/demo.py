"""`make demo`: a tour of slsfs on an embedded store in ./demo-store.

It writes a few files' worth of data into a volume, takes checkpoints, a snapshot
and a clone, and prints the history and the space figures (dedup, compression), so
a newcomer sees what the store does without reading code.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from objectstore import Store


def say(text: str = "") -> None:
    print(text, flush=True)


def write_file(store: Store, volume: str, name: str, data: bytes, block: int = 64 << 10) -> None:
    """Store `data` as blocks in the volume's tree under key `name/<block no>`."""
    tree = store.volume(volume)
    for i in range(0, max(len(data), 1), block):
        cid = store.put(data[i:i + block])
        tree.put(f"{name}/{i // block:08d}".encode(), b"", refs=[cid])


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:] or ["demo-store"])[0])
    if path.exists():
        shutil.rmtree(path)
    say(f"== slsfs demo: a store in {path}/ (no server, just a directory)")
    store = Store.init(path)
    store.create_volume("app")
    log_line = b"2026-11-29 12:00:00 INFO request served in 3 ms\n"
    write_file(store, "app", "server.log", log_line * 40_000)
    write_file(store, "app", "random.bin", os.urandom(1 << 20))
    c1 = store.commit("initial data")
    say(f"wrote a 1.9 MiB log and 1 MiB of random bytes; checkpoint {c1.id} is durable")

    t0 = time.perf_counter()
    for i in range(100):
        store.volume("app").put(f"counter/{i % 10}".encode(), str(i).encode())
        store.commit(f"tick {i}", durable=False)
    store.barrier()
    dt = time.perf_counter() - t0
    say(f"took 100 more checkpoints of small changes in {dt * 1000:.0f} ms "
        f"({100 / dt:.0f}/s, one fsync shared by all: group commit)")

    store.snapshot("app", "before-upgrade")
    write_file(store, "app", "server.log", log_line * 41_000)
    store.create_volume("app-clone", store.snapshots()["before-upgrade"])
    store.tag("upgraded", store.commit("after upgrade").id)
    say("snapshot 'before-upgrade' taken, log grown, clone 'app-clone' made from the "
        "snapshot: both O(1)")
    say()
    say("history (newest first, 5 shown):")
    for c in store.log()[:5]:
        when = time.strftime("%H:%M:%S", time.localtime(c.time))
        tags = [n for n, i in store.tags().items() if i == c.id]
        say(f"  {c.id:4d}  {when}  {c.label}{'  [' + ', '.join(tags) + ']' if tags else ''}")
    stats = store.stats()
    say()
    say(f"volumes: {', '.join(store.volumes())}; checkpoints kept: {stats['checkpoints']}")
    say(f"logical data: {stats['logical_bytes'] / 2**20:.1f} MiB, unique: "
        f"{stats['unique_bytes'] / 2**20:.1f} MiB (dedup {stats['dedup_ratio']}x), "
        f"stored: {stats['stored_data_bytes'] / 2**20:.2f} MiB (lz4 {stats['compression_ratio']}x)")
    problems = store.fsck()
    say(f"fsck: {'clean' if not problems else problems}")
    store.close()
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
