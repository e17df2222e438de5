"""An inotify instance comes back with its watches under the same descriptors (a gap
included), and the restored process keeps receiving events."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import checkpointer
from checkpointer import load_image
from ckpt_helpers import ok_lines, reads_after_a_restore, wait_for


def _watcher_source(watches: str) -> str:
    """A C program that makes an inotify instance `fd`, runs `watches` (C statements that
    add the watches and write a "ready" line to `out`), then writes each event to
    argv[3] as "wd=W mask=M name=N"."""
    return r"""
#include <stdio.h>
#include <sys/inotify.h>
#include <unistd.h>
int main(int argc, char **argv) {
    FILE *out = fopen(argv[3], "w");
    int fd = inotify_init1(0);
""" + watches + r"""
    fflush(out);
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        ssize_t len = read(fd, buf, sizeof buf);
        for (char *p = buf; len > 0 && p < buf + len; ) {
            struct inotify_event *e = (struct inotify_event *)p;
            fprintf(out, "wd=%d mask=%x name=%s\n", e->wd, e->mask, e->len ? e->name : "");
            p += sizeof *e + e->len;
        }
        fflush(out);
    }
}
"""


WATCHER = _watcher_source(r"""
    int a = inotify_add_watch(fd, argv[1], IN_CREATE);
    int gone = inotify_add_watch(fd, "/", IN_CREATE);       /* leaves a gap: wd 2 */
    inotify_rm_watch(fd, gone);
    int b = inotify_add_watch(fd, argv[2], IN_DELETE);
    fprintf(out, "ready a=%d b=%d\n", a, b);""")


def test_watches_come_back_with_their_descriptors(procs, store, tmp_path):
    source, program = tmp_path / "watcher.c", tmp_path / "watcher"
    source.write_text(WATCHER)
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "events"
    a.mkdir()
    b.mkdir()
    proc = procs.start([str(program), str(a), str(b), str(out)])
    lines = lambda: out.read_text().splitlines() if out.exists() else []
    wait_for(lambda: "ready a=1 b=3" in lines() and "wd=2 mask=8000 name=" in lines(), "the watcher to start")

    checkpointer.checkpoint([proc.pid], store, "watcher")
    [record] = [f for f in load_image(store, "watcher").files if f["kind"] == "inotify"]
    assert [(wd, path) for wd, path, _ in record["watches"]] == [(1, str(a)), (3, str(b))]
    procs.kill(proc)
    procs.restored.append(checkpointer.restore(store, "watcher"))

    (a / "created").write_text("x")
    (b / "doomed").write_text("x")
    (b / "doomed").unlink()
    wait_for(lambda: "wd=1 mask=100 name=created" in lines() and "wd=3 mask=200 name=doomed" in lines(),
             "the restored watcher to see both events")
    assert lines().count("wd=2 mask=8000 name=") == 1, "the restore's stand-in watch leaked an event"


def test_a_watch_of_a_file_unlinked_while_open_goes_on_reporting(procs, store, tmp_path):
    """A watched file unlinked while the process still has it open (a log rotated away
    under `tail -f`; zdtm inotify00) was refused ("no path any more"): its watch comes back
    on the restored open file, and the process's other watches go on too."""
    out = tmp_path / "unlinked.out"
    proc = procs.python("inotify_unlinked.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the target to watch and unlink")
    checkpointer.checkpoint([proc.pid], store, "unlinked")
    [watcher] = [f for f in load_image(store, "unlinked").files if f["kind"] == "inotify"]
    assert [watch[1] is None for watch in watcher["watches"]] == [False, True]
    procs.kill(proc)
    reads_after_a_restore(procs, store, "unlinked", out)


def test_events_lost_at_the_checkpoint_are_reported_as_an_overflow(procs, store, tmp_path):
    """Events waiting in the queue at the checkpoint cannot be kept (no way to read a queue
    without emptying it): the restored instance reports IN_Q_OVERFLOW, the kernel's word
    for lost events, then the new events; the program's next watch number is unchanged.
    Dropped silently, a program blocked reading for them waited for ever (zdtm
    inotify_system)."""
    out = tmp_path / "queued.out"
    proc = procs.python("inotify_queued.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the target to queue an event")
    checkpointer.checkpoint([proc.pid], store, "queued")
    [watcher] = [f for f in load_image(store, "queued").files if f["kind"] == "inotify"]
    assert watcher["queued"] == 16 + 16, "one IN_CREATE with a 16-byte name was waiting"
    procs.kill(proc)
    reads_after_a_restore(procs, store, "queued", out)


FLAGGED = _watcher_source(r"""
    int link = inotify_add_watch(fd, argv[1], IN_ATTRIB | IN_DONT_FOLLOW);  /* the symlink itself */
    int quiet = inotify_add_watch(fd, argv[2], IN_ONLYDIR);                  /* flags only: mask 0 */
    fprintf(out, "ready link=%d quiet=%d\n", link, quiet);""")


def _inotify_watches(pid: int) -> list[tuple[str, str, str]]:
    """(wd, inode number, mask) of each inotify watch of `pid`, as /proc shows them."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        found += re.findall(r"inotify wd:(\w+) ino:(\w+) sdev:\w+ mask:(\w+)", Path(f"/proc/{pid}/fdinfo/{fd}").read_text())
    return sorted(found)


def test_a_symlink_watched_as_such_and_a_watch_without_events_come_back(procs, store, tmp_path):
    """A watch added with IN_DONT_FOLLOW on a symlink watches the link, not its target, and
    does so after a restore; a watch added with flags only (mask 0: stress-ng's inotify
    stressor has them) made the restore fail with EINVAL."""
    source, program = tmp_path / "flagged.c", tmp_path / "flagged"
    source.write_text(FLAGGED)
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    target, link, quiet, out = tmp_path / "target", tmp_path / "link", tmp_path / "quiet", tmp_path / "events"
    target.write_text("x")
    link.symlink_to(target)
    quiet.mkdir()
    proc = procs.start([str(program), str(link), str(quiet), str(out)])
    lines = lambda: out.read_text().splitlines() if out.exists() else []
    wait_for(lambda: "ready link=1 quiet=2" in lines(), "the watcher to start")
    before = _inotify_watches(proc.pid)
    assert before == [("1", f"{link.lstat().st_ino:x}", "4"), ("2", f"{quiet.stat().st_ino:x}", "0")]

    checkpointer.checkpoint([proc.pid], store, "flagged")
    procs.kill(proc)
    restored = checkpointer.restore(store, "flagged")
    procs.restored.append(restored)
    [pid] = restored.pids
    assert _inotify_watches(pid) == before

    os.utime(target)                                 # the target's attributes: not watched
    os.utime(link, follow_symlinks=False)            # the link's: watched
    wait_for(lambda: "wd=1 mask=4 name=" in lines(), "the restored watcher to see the link's change")
    assert lines().count("wd=1 mask=4 name=") == 1, lines()
