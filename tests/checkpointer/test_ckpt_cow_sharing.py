"""A pre-forking server's workers share the master's memory copy-on-write (nginx,
PostgreSQL, gunicorn with preload); a restore wrote every page of every process anew, so
each worker came back with its own copy: N times the memory (zdtm cow00, cow01). Now each
parent's memory is built before its children are cloned from it, and a child writes only
the pages that differ from what it inherited (checkpointer/inherited.py)."""
from __future__ import annotations

import os
import signal
import struct

import checkpointer

from ckpt_helpers import wait_for

PAGE = 4096
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


def frames(pid: int, start: int, size: int) -> list[int | None]:
    """The physical frame of each page of [start, start + size) in `pid` (None: not present)."""
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        pagemap.seek(start // PAGE * 8)
        entries = struct.unpack(f"{size // PAGE}Q", pagemap.read(size // PAGE * 8))
    return [entry & PFN_MASK if entry & PRESENT else None for entry in entries]


def shared_pages(master: int, worker: int, start: int, size: int) -> list[bool]:
    return [a is not None and a == b for a, b in zip(frames(master, start, size), frames(worker, start, size))]


def test_a_preforked_servers_workers_share_its_memory_again_after_restore(procs, store, binaries, tmp_path,
                                                                          subreaper):
    out = tmp_path / "preforked.out"
    proc = procs.start([str(binaries / "preforked"), str(out), "8", "3"])
    wait_for(lambda: out.exists() and "ready" in out.read_text(), "the workers to start")
    lines = out.read_text().split("\n")
    start, size = (int(value, 16 if n == 0 else 10) for n, value in enumerate(lines[0].split()[1:]))
    workers = [int(line.split()[1]) for line in lines if line.startswith("worker")]
    before = [shared_pages(proc.pid, worker, start, size) for worker in workers]
    assert [sum(pages) for pages in before] == [size // PAGE - 1, size // PAGE, size // PAGE]
    checkpointer.checkpoint([proc.pid], store, "preforked", tree=True)
    procs.kill(proc)
    subreaper(workers)
    restored = checkpointer.restore(store, "preforked")
    procs.restored.append(restored)
    master, restored_workers = restored.pids[0], restored.pids[1:]
    after = [shared_pages(master, worker, start, size) for worker in restored_workers]
    assert after == before, [sum(pages) for pages in after]
    for pid in restored.pids:
        os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: out.read_text().count("ok ") + out.read_text().count("BAD ") >= 4, "the processes to check")
    assert "BAD" not in out.read_text() and out.read_text().count("ok ") == 4, out.read_text()
