"""A process restored while asleep in poll() or nanosleep() (syscalls the kernel restarts
through a per-task restart block, which does not survive) goes back to sleep there,
instead of seeing -EINTR (which `tail -f`, for one, treats as fatal)."""
from __future__ import annotations

import os
import subprocess
import time

import checkpointer
from ckpt_helpers import wait_for

SLEEPER = r"""
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    FILE *out = fopen(argv[2], "w");
    setvbuf(out, NULL, _IONBF, 0);
    struct pollfd p = {open(argv[1], O_RDWR | O_NONBLOCK), POLLIN, 0};
    fprintf(out, "polling\n");
    int r = poll(&p, 1, -1);
    fprintf(out, "poll %s\n", r == 1 ? "ready" : strerror(errno));
    struct timespec two = {2, 0};
    fprintf(out, "sleeping\n");
    r = nanosleep(&two, NULL);
    fprintf(out, "nanosleep %s\n", r == 0 ? "done" : strerror(errno));
    pause();
}
"""


def test_poll_and_nanosleep_resume_after_restore(procs, store, tmp_path):
    source, program = tmp_path / "sleeper.c", tmp_path / "sleeper"
    source.write_text(SLEEPER)
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    fifo, out = tmp_path / "fifo", tmp_path / "out"
    os.mkfifo(fifo)
    lines = lambda: out.read_text().splitlines() if out.exists() else []

    proc = procs.start([str(program), str(fifo), str(out)])
    wait_for(lambda: lines() == ["polling"], "the target to poll")
    time.sleep(0.2)                                          # inside poll()
    checkpointer.checkpoint([proc.pid], store, "in-poll")
    procs.kill(proc)
    first = checkpointer.restore(store, "in-poll")
    procs.restored.append(first)
    time.sleep(0.3)
    assert lines() == ["polling"], "the restored poll() returned by itself"
    with open(fifo, "wb", buffering=0) as w:
        w.write(b"x")
    wait_for(lambda: lines()[:3] == ["polling", "poll ready", "sleeping"], "the restored poll() to see data")

    checkpointer.checkpoint(first.pids, store, "in-nanosleep")   # within the 2 s sleep
    first.kill()
    procs.restored.append(checkpointer.restore(store, "in-nanosleep"))
    wait_for(lambda: "nanosleep" in " ".join(lines()[3:]), "the restored nanosleep() to end", 30)
    assert lines()[3] == "nanosleep done", lines()
