"""A process that chroot()ed itself (as servers do to confine themselves) is restored
inside the same root, with the files it opens by path there."""
from __future__ import annotations

import os
import subprocess

import checkpointer
from ckpt_helpers import wait_for

JAILED = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (chroot(argv[1]) != 0 || chdir("/") != 0) return 2;
    /* opened by path inside the root, and kept open (a file renamed away after the
       checkpoint could not be reopened at restore: files outside a mount are not kept) */
    int fd = open("/count", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 3;
    for (unsigned long n = 1;; n++) {
        char line[32];
        int len = snprintf(line, sizeof line, "%020lu\n", n);
        if (pwrite(fd, line, len, 0) != len) return 4;
        usleep(5000);
    }
}
"""


def count(jail) -> int:
    try:
        return int((jail / "count").read_text())
    except (OSError, ValueError):
        return 0


def test_chrooted_process_is_restored_in_its_root(procs, store, tmp_path):
    source, program, jail = tmp_path / "jailed.c", tmp_path / "jailed", tmp_path / "jail"
    source.write_text(JAILED)
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    jail.mkdir()
    proc = procs.start([str(program), str(jail)])
    floor = wait_for(lambda: count(jail) >= 20 and count(jail), "the jailed target to count")
    checkpointer.checkpoint([proc.pid], store, "jailed")      # holds a count >= floor
    procs.kill(proc)
    at_kill = count(jail)
    restored = checkpointer.restore(store, "jailed")
    procs.restored.append(restored)
    [pid] = restored.pids
    assert os.readlink(f"/proc/{pid}/root") == str(jail)
    first = wait_for(lambda: count(jail) != at_kill and count(jail), "the restored target to write")
    assert first >= floor, f"the restored target started over at {first} (checkpointed >= {floor})"
    wait_for(lambda: count(jail) > first + 20, "the restored target to count on in its root")
