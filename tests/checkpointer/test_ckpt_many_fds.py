"""A process with hundreds of fds (TCP connections to a peer outside the image, Unix
socket pairs), all watched by one epoll, comes back with each fd under its number, with
its flags (non-blocking, close-on-exec), and each watch: the restore installs the fds and
the watches in batches of injected calls (more than fit one batch area here)."""
from __future__ import annotations

import resource
import socket
import subprocess
import sys

import checkpointer
from checkpointer import load_image

from ckpt_helpers import children_of, ok_lines, restored_goes_on, wait_for

PAIRS = 300   # 600 watched fds and 900 fds in all: several batches of each kind


def test_hundreds_of_sockets_watched_by_an_epoll_come_back_each_under_its_number(procs, store, tmp_path):
    out = tmp_path / "fds.out"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(PAIRS)
        proc = procs.python("many_fds.py", str(out), str(listener.getsockname()[1]), str(PAIRS))
        accepted = []
        try:
            while len(accepted) < PAIRS:        # (the backlog holds them all; accepted to close them)
                listener.settimeout(60)
                accepted.append(listener.accept()[0])
            assert wait_for(lambda: out.exists() and ok_lines(out), "the target to open its fds") == [
                f"ready {2 * PAIRS}"]
            checkpointer.checkpoint([proc.pid], store, "fds", tree=True)
            procs.kill(proc)
        finally:
            for conn in accepted:
                conn.close()
    restored = checkpointer.restore(store, "fds")
    procs.restored.append(restored)
    assert sum("restored closed" in w for w in restored.warnings) == PAIRS
    (tmp_path / "fds.out.check").touch()
    lines = wait_for(lambda: ok_lines(out)[1:], "the restored target to check its fds")
    assert lines == [f"ok {2 * PAIRS}"]


def test_an_fd_above_the_restorers_file_limit_comes_back(procs, store, tmp_path):
    """fds pass through spare numbers above the highest one while a process is rebuilt,
    under the restorer's file limit: a process that raised its own limit and holds fds
    above the restorer's (the usual soft limit of 1024) failed to restore (EINVAL)."""
    out = tmp_path / "high.out"
    proc = procs.python("high_fd.py", str(out), "1500")
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the target to take its fd")
    checkpointer.checkpoint([proc.pid], store, "high")
    procs.kill(proc)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))     # as a login shell's
    try:
        restored_goes_on(procs, store, "high", out)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


SHARERS = """
import os, random, sys, time
random.seed(7)
opened = [os.open("/dev/null", os.O_RDONLY) for _ in range(300)]   # 300 descriptions, one target
dups = {os.dup(fd): fd for fd in random.sample(opened, 100)}        # 100 more fds on some of them
print(" ".join(f"{a}:{b}" for a, b in dups.items()), flush=True)
if os.fork() == 0:          # the child holds them all too: the same descriptions
    time.sleep(600)
time.sleep(600)
"""


def test_fds_on_one_target_are_told_apart_and_shared_ones_found(procs, store, tmp_path):
    """Hundreds of fds on one target (/dev/null here, /dev/ptmx for a terminal server):
    each open file description is recorded once, whichever fds and processes hold it
    (found by a binary search in kcmp's order, no longer a scan of every earlier one)."""
    proc = procs.start([sys.executable, "-c", SHARERS], stdout=subprocess.PIPE, text=True)
    dups = dict(tuple(map(int, pair.split(":"))) for pair in proc.stdout.readline().split())
    wait_for(lambda: len(children_of(proc.pid)) == 1, "the child")
    checkpointer.checkpoint([proc.pid], store, "sharers", tree=True)
    image = load_image(store, "sharers")
    parent, child = image.processes                 # parents first
    file_of = {record["fd"]: record["file"] for record in parent["fds"]}
    nulls = [fd for fd, file_id in file_of.items() if fd > 2 and image.files[file_id].get("path") == "/dev/null"]
    assert len({file_of[fd] for fd in nulls}) == 300
    assert all(file_of[dup] == file_of[original] for dup, original in dups.items())
    assert {record["fd"]: record["file"] for record in child["fds"]} == file_of
