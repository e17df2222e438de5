"""A process restored while asleep in poll() or nanosleep() (syscalls the kernel restarts
through a per-task restart block, which does not survive) goes back to sleep there,
instead of seeing -EINTR (which `tail -f`, for one, treats as fatal)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import checkpointer
from checkpointer import kernel
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


WAITER = r"""
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
static volatile sig_atomic_t signalled;
static void on_usr1(int sig) { signalled = 1; }
int main(int argc, char **argv) {
    FILE *out = fopen(argv[1], "w");
    setvbuf(out, NULL, _IONBF, 0);
    int ep = epoll_create1(0), efd = eventfd(0, EFD_NONBLOCK);
    struct epoll_event ev = {EPOLLIN, {.u64 = 9}};
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;                    /* no SA_RESTART: a signal ends the wait */
    sigaction(SIGUSR1, &sa, NULL);
    fprintf(out, "eventfd %d\n", efd);
    for (;;) {
        int r = epoll_wait(ep, &ev, 1, -1);
        if (r < 0) {
            fprintf(out, "%s\n", errno != EINTR ? strerror(errno) : signalled ? "EINTR signal" : "EINTR");
            signalled = 0;
            continue;
        }
        uint64_t n;
        read(efd, &n, sizeof n);
        fprintf(out, "event %llu\n", (unsigned long long)n);
    }
}
"""


def test_an_endless_epoll_wait_goes_on_through_checkpoints_and_restore(procs, store, tmp_path):
    """epoll_wait(-1) is not restarted by Linux after a stop (it fails with EINTR): the
    freeze restarts it, so a program that takes EINTR for an error survives its
    checkpoints; a real signal still ends the wait with EINTR, as its handler expects."""
    source, program, out = tmp_path / "waiter.c", tmp_path / "waiter", tmp_path / "out"
    source.write_text(WAITER)
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    lines = lambda: out.read_text().splitlines() if out.exists() else []

    def event(pid: int, efd: int) -> None:
        borrowed = kernel.borrow_fd(pid, efd)
        try:
            os.write(borrowed, (1).to_bytes(8, "little"))
        finally:
            os.close(borrowed)

    proc = procs.start([str(program), str(out)])
    wait_for(lambda: lines()[:1] and lines()[0].startswith("eventfd"), "the target to wait")
    efd = int(lines()[0].split()[1])
    time.sleep(0.1)
    for i in range(4):
        checkpointer.checkpoint([proc.pid], store, f"waiting-{i}")
        time.sleep(0.05)
    time.sleep(0.2)
    assert lines()[1:] == [], "the checkpoints ended the endless wait"
    event(proc.pid, efd)
    wait_for(lambda: lines()[1:] == ["event 1"], "the event")
    os.kill(proc.pid, signal.SIGUSR1)
    wait_for(lambda: lines()[1:] == ["event 1", "EINTR signal"], "the signal to end the wait")
    time.sleep(0.1)
    checkpointer.checkpoint([proc.pid], store, "waiting")
    procs.kill(proc)
    restored = checkpointer.restore(store, "waiting")
    procs.restored.append(restored)
    time.sleep(0.3)
    assert lines()[1:] == ["event 1", "EINTR signal"], "the restored wait ended by itself"
    event(restored.pids[0], efd)
    wait_for(lambda: lines()[1:] == ["event 1", "EINTR signal", "event 1"], "the restored wait to see an event")
