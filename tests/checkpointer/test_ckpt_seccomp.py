"""Seccomp filters per thread: a thread that installed a filter of its own (no TSYNC) gets
that filter back at restore, and no other thread gets it."""
from __future__ import annotations

import os

import checkpointer
from checkpointer import load_image
from ckpt_helpers import assert_unbroken, ok_lines, wait_for


def _seccomp_modes(pid: int) -> list[int]:
    """The Seccomp: field of each thread of `pid`, main thread first."""
    modes = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        status = open(f"/proc/{pid}/task/{tid}/status").read()
        modes.append(int(status.split("Seccomp:")[1].split()[0]))
    return modes


def test_threads_keep_their_own_seccomp_filters(procs, store, binaries, tmp_path):
    out = tmp_path / "seccomp.out"
    proc = procs.start([str(binaries / "seccomp_threads"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 110, "the target's threads to check their filters")
    checkpointer.checkpoint([proc.pid], store, "img")
    procs.kill(proc)
    size = out.stat().st_size
    record = load_image(store, "img").processes[0]["seccomp"]
    assert len(record["filters"]) == 2
    assert sorted(len(chain) for chain in record["threads"]) == [0, 1, 1] and record["threads"][0] == []
    restored = checkpointer.restore(store, "img")
    procs.restored.append(restored)
    [pid] = restored.pids
    wait_for(lambda: out.stat().st_size > size + 250 * 10 or "BAD" in out.read_text(), "the restored threads to check")
    assert assert_unbroken(out, proc.pid) > 250     # past two progress checks of both threads
    assert _seccomp_modes(pid) == [0, 2, 2]
