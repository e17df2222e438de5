"""SysV shared memory: a parent and a child share a keyed segment and a segment removed
while attached (IPC_RMID); after checkpoint -> SIGKILL -> restore both see the same
segments, under the same ids, at the same addresses, with the contents of the
checkpoint, and go on sharing them; a second copy of the image cannot share them."""
from __future__ import annotations

import os
import subprocess

import pytest

import checkpointer
from checkpointer import sysv_ipc, sysv_shm
from ckpt_helpers import wait_for

SHARER = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>
/* usage: sharer OUT KEY. Segment A (key KEY) holds the parent's counter, segment B
   (private, removed while attached) the child's; each process checks the other's
   counter never goes back and reports "ids A B" once, then counters as they go. */
int main(int argc, char **argv) {
    FILE *out = fopen(argv[1], "w");
    setvbuf(out, NULL, _IONBF, 0);
    int a = shmget(atoi(argv[2]), 4096, IPC_CREAT | 0600);
    int b = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
    volatile unsigned long *pa = shmat(a, NULL, 0), *pb = shmat(b, NULL, 0);
    shmctl(b, IPC_RMID, NULL);
    pa[0] = pb[0] = 0;
    fprintf(out, "ids %d %d %p %p\n", a, b, (void *)pa, (void *)pb);
    if (fork() == 0) {                       /* the child counts in B, watches A */
        unsigned long seen = 0;
        for (;;) {
            pb[0]++;
            if (pa[0] < seen) { fprintf(out, "BAD child saw A go back\n"); _exit(1); }
            seen = pa[0];
            usleep(2000);
        }
    }
    unsigned long seen = 0;
    for (;;) {                               /* the parent counts in A, watches B */
        pa[0]++;
        if (pb[0] < seen) { fprintf(out, "BAD parent saw B go back\n"); return 1; }
        seen = pb[0];
        if (pa[0] % 50 == 0) fprintf(out, "a=%lu b=%lu\n", pa[0], pb[0]);
        usleep(2000);
    }
}
"""


def start_sharer(procs, tmp_path, key: int):
    """The sharer program compiled and started with `key`; (process, its output lines)."""
    source, program, out = tmp_path / "sharer.c", tmp_path / "sharer", tmp_path / "out"
    source.write_text(SHARER)
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    proc = procs.start([str(program), str(out), str(key)])
    return proc, lambda: out.read_text().splitlines() if out.exists() else []


def test_segments_come_back_with_their_ids_and_contents(procs, store, tmp_path):
    key = 0x5100000 + os.getpid() % 0xFFFF
    proc, lines = start_sharer(procs, tmp_path, key)
    try:
        wait_for(lambda: len(lines()) > 5, "the sharers to count")
        ids = lines()[0]
        checkpointer.checkpoint([proc.pid], store, "sharer", tree=True)
        counts = [l for l in lines() if l.startswith("a=")]
        last_a = int(counts[-1].split()[0][2:])
        procs.kill(proc)
        restored = checkpointer.restore(store, "sharer")
        procs.restored.append(restored)
        assert ids == lines()[0]                     # same segments: the ids the processes hold
        wait_for(lambda: len([l for l in lines() if l.startswith("a=")]) > len(counts) + 5,
                 "the restored sharers to count on")
        assert not [l for l in lines() if l.startswith("BAD")], lines()
        after = [int(l.split()[0][2:]) for l in lines() if l.startswith("a=")][len(counts):]
        assert after[0] >= last_a - 50, f"segment A went back from {last_a} to {after[0]}"
        assert all(int(l.split()[1][2:]) > 0 for l in lines()[-3:] if l.startswith("a="))
        # a second copy while this one runs would set the live segments back: refused
        with pytest.raises(checkpointer.CheckpointError, match="in use by 2 running"):
            procs.restored.append(checkpointer.restore(store, "sharer"))
        running = len(lines())
        wait_for(lambda: len(lines()) > running + 3, "the restored sharers to count on undisturbed")
        assert not [l for l in lines() if l.startswith("BAD")], lines()
    finally:
        subprocess.run(["ipcrm", "-M", str(key)], capture_output=True)


def test_a_segment_whose_key_was_taken_comes_back_without_it(procs, store, tmp_path):
    """Keys are often made from inode numbers (PostgreSQL's), which another file system
    reuses: if the key belongs to another segment at restore, the processes get their
    segment back under its id, without the key, and a warning says so; it is owned by
    whom it was."""
    key = 0x5200000 + os.getpid() % 0xFFFF
    proc, lines = start_sharer(procs, tmp_path, key)
    try:
        wait_for(lambda: len(lines()) > 5, "the sharers to count")
        shmid = int(lines()[0].split()[1])
        sysv_ipc.set_owner("shm", shmid, 65534, 65534)          # owned by another user than its creator
        checkpointer.checkpoint([proc.pid], store, "keyless", tree=True)
        counts = len([l for l in lines() if l.startswith("a=")])
        procs.kill(proc)
        subprocess.run(["ipcrm", "-m", str(shmid)], check=True)
        subprocess.run(["python3", "-c", f"import ctypes; ctypes.CDLL(None).shmget({key}, 4096, 0o1600)"],
                       check=True)                     # another segment takes the key
        restored = checkpointer.restore(store, "keyless")
        procs.restored.append(restored)
        assert any("key" in w and str(shmid) in w for w in restored.warnings), restored.warnings
        owner = sysv_shm.segment(shmid)
        assert (owner["uid"], owner["gid"], owner["mode"] & 0o777) == (65534, 65534, 0o600), owner
        wait_for(lambda: len([l for l in lines() if l.startswith("a=")]) > counts + 5,
                 "the restored sharers to count on")
        assert not [l for l in lines() if l.startswith("BAD")], lines()
    finally:
        procs.kill(proc)
        for restored in procs.restored:
            restored.kill()
        subprocess.run(["ipcrm", "-M", str(key)], capture_output=True)
        if "shmid" in locals():
            subprocess.run(["ipcrm", "-m", str(shmid)], capture_output=True)     # made again keyless


def test_a_segment_mapped_in_pieces_comes_back_in_the_same_pieces(procs, store, binaries, tmp_path):
    """An attachment split by mprotect (a read-only first page) and cut short by munmap
    (its last page): each piece comes back at its address with its protection and its
    offset in the segment, sharing the segment's pages, and shmdt of the attachment's
    address detaches every piece, as before the checkpoint."""
    out, detach = tmp_path / "out", tmp_path / "detach"
    proc = procs.start([str(binaries / "shm_pieces"), str(out), str(detach)])

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    def pieces(pid: int) -> list[tuple[str, str, str]]:
        return [(line.split()[0], line.split()[1], line.split()[2])
                for line in open(f"/proc/{pid}/maps") if "/SYSV" in line]

    wait_for(lambda: len(lines()) > 5, "the target to count")
    assert lines()[0] == "ready 2"
    before = pieces(proc.pid)
    assert [(perms, offset) for _, perms, offset in before] == [("r--s", "00000000"), ("rw-s", "00001000")]
    checkpointer.checkpoint([proc.pid], store, "pieces")
    procs.kill(proc)
    count = len(lines())
    restored = checkpointer.restore(store, "pieces")
    procs.restored.append(restored)
    assert pieces(restored.pids[0]) == before
    wait_for(lambda: len(lines()) > count + 5, "the restored target to count")
    detach.touch()
    wait_for(lambda: any(line.startswith(("detached", "BAD")) for line in lines()), "the target to detach")
    assert not [line for line in lines() if line.startswith("BAD")], lines()[-3:]
    assert [line for line in lines() if line.startswith("detached")] == ["detached 0"]
