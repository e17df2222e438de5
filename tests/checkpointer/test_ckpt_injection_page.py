"""The injection page kept in a tracked process between checkpoints (injection_page.py):
never in an image, never inherited by a child, replaced when the application unmaps it
or maps over it (its own data untouched and stored), gone once tracking stops."""
from __future__ import annotations

import os
import sys

import checkpointer
from checkpointer import freeze, load_image
from checkpointer.incremental import Incremental
from ckpt_helpers import ok_lines, wait_for

# Writes "ok <n>" lines; on a command in OUT.cmd ("unmap ADDR LEN", "mapover ADDR LEN",
# "fork") does it and answers in OUT.ack. A mapping it made over another keeps a pattern,
# checked at every line ("BAD" if anything else wrote there).
TARGET = r"""
import ctypes, os, sys, time
out = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
mine = None
n = 0
while True:
    n += 1
    bad = mine is not None and ctypes.string_at(*mine) != b"\x5a" * mine[1]
    with open(out, "a") as f:
        f.write(f"ok {n}\n" if not bad else f"BAD {n} the mapping made over the page changed\n")
    cmd = out + ".cmd"
    if os.path.exists(cmd):
        words = open(cmd).read().split()
        os.unlink(cmd)
        if words[0] == "unmap":
            answer = libc.munmap(int(words[1]), int(words[2]))
        elif words[0] == "mapover":
            addr, size = int(words[1]), int(words[2])
            answer = libc.mmap(addr, size, 7, 0x22 | 0x10, -1, 0)      # RWX, private anonymous, MAP_FIXED
            ctypes.memset(addr, 0x5a, size)
            mine = (addr, size)
        else:
            child = os.fork()
            if child == 0:
                time.sleep(3600)
            answer = child
        with open(out + ".ack.tmp", "w") as f:
            f.write(str(answer))
        os.replace(out + ".ack.tmp", out + ".ack")
    time.sleep(0.01)
"""


def rwx_anonymous(pid: int) -> list[tuple[int, int]]:
    """(start, length) of the private RWX anonymous mappings of `pid`."""
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1] == "rwxp" and fields[4] == "0" and len(fields) == 5:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end - start))
    return found


def command(out, *words) -> int:
    ack = out.with_name(out.name + ".ack")
    if ack.exists():
        ack.unlink()
    staged = out.with_name(out.name + ".cmd.tmp")     # the whole command at once: the target polls
    staged.write_text(" ".join(map(str, words)))
    staged.rename(out.with_name(out.name + ".cmd"))
    return int(wait_for(lambda: ack.exists() and ack.read_text(), f"the target to do {words[0]}"))


def image_vmas(store, root, pid: int) -> list[tuple[int, int]]:
    meta = next(p for p in load_image(store, root).processes if p["host_pid"] == pid)
    return [(v["start"], v["end"] - v["start"]) for v in meta["vmas"]]


def checkpoint(inc, store, pid, out):
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= lines + 3, "the target to run on")
    with freeze([pid], tree=True) as frozen:
        return inc.capture(frozen, store)


def test_the_kept_page_is_replaced_when_unmapped_or_mapped_over_and_never_stored(procs, store, tmp_path):
    out = tmp_path / "target.out"
    proc = procs.start([sys.executable, "-c", TARGET, str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the target to start")
    assert rwx_anonymous(proc.pid) == [], "the target has RWX mappings of its own: the test cannot tell ours"
    inc = Incremental()
    try:
        root = checkpoint(inc, store, proc.pid, out)
        [page] = rwx_anonymous(proc.pid)                      # ours, left for the next checkpoint
        assert page not in image_vmas(store, root, proc.pid)
        root = checkpoint(inc, store, proc.pid, out)
        assert rwx_anonymous(proc.pid) == [page]              # the same page again
        assert page not in image_vmas(store, root, proc.pid)

        child = command(out, "fork")                          # MADV_DONTFORK: no child inherits it
        assert rwx_anonymous(child) == []
        os.kill(child, 9)

        assert command(out, "unmap", *page) == 0              # the application unmaps it
        root = checkpoint(inc, store, proc.pid, out)
        [page] = rwx_anonymous(proc.pid)                      # a new one
        assert page not in image_vmas(store, root, proc.pid)

        command(out, "mapover", *page)                        # the application maps its own over it
        root = checkpoint(inc, store, proc.pid, out)
        assert page in image_vmas(store, root, proc.pid)      # the application's mapping is stored,
        ours = [m for m in rwx_anonymous(proc.pid) if m != page]
        assert len(ours) == 1                                 # ours is elsewhere now
        assert ours[0] not in image_vmas(store, root, proc.pid)
        root = checkpoint(inc, store, proc.pid, out)          # and the two are told apart again
        assert sorted(rwx_anonymous(proc.pid)) == sorted([page, ours[0]])
    finally:
        inc.close()
    assert rwx_anonymous(proc.pid) == [page]                  # close() took ours away
    assert "BAD" not in out.read_text()

    store.set_root(checkpointer.image.image_root_name("target"), root)
    store.commit("target")
    procs.kill(proc)
    restored = checkpointer.restore(store, "target")
    procs.restored.append(restored)
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= lines + 10, "the restored target to run on")
    assert rwx_anonymous(restored.pids[0]) == [page]          # its own mapping, with its pattern
    assert "BAD" not in out.read_text()


NR_MADVISE, ERRNO_EPERM = 28, 0x50001      # seccomp_refuser.py: madvise refused, EPERM


def test_a_process_that_may_not_madvise_keeps_no_page_and_is_checkpointed(procs, store, tmp_path, monkeypatch):
    """Without MADV_DONTFORK the page would be inherited by children: such a process keeps
    none, and its injected calls get a mapping for each checkpoint as before. As root the
    freeze suspends seccomp (kernel.SUSPEND_SECCOMP): here it must not."""
    monkeypatch.setattr(checkpointer.kernel, "SUSPEND_SECCOMP", 0)
    out = tmp_path / "no_madvise.out"
    proc = procs.python("seccomp_refuser.py", str(out), str(NR_MADVISE), hex(ERRNO_EPERM))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "the target to start")
    inc = Incremental()
    try:
        for _ in range(3):
            root = checkpoint(inc, store, proc.pid, out)
            assert rwx_anonymous(proc.pid) == []
    finally:
        inc.close()
    assert load_image(store, root).processes[0]["seccomp"]["filters"]
    lines = len(ok_lines(out))
    wait_for(lambda: len(ok_lines(out)) >= lines + 5, "the target to run on")
