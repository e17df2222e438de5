"""Pseudo-terminals: a parent holding a pty master, its child a session leader whose
controlling terminal is the slave, and a grandchild job in the foreground, are
checkpointed, killed and restored: the pair works again with the same window size and
settings, the session (the job included) has its controlling terminal and the job is
still in the foreground (the target checks all of it in every exchange)."""
from __future__ import annotations

import contextlib
import os
import signal

import pytest

import checkpointer
from checkpointer import load_image

from ckpt_helpers import assert_unbroken, children_of, ok_lines, wait_for

LINE = 20


def test_pty_pair_with_its_session_and_foreground_job_comes_back(procs, store, tmp_path, subreaper):
    out = tmp_path / "pty.out"
    proc = procs.python("pty_pair.py", str(out))
    session = []
    try:
        wait_for(lambda: out.exists() and len(ok_lines(out)) >= 50, "50 exchanges over the pty")
        [leader] = children_of(proc.pid)
        session = [leader] + children_of(leader)
        assert len(session) == 2
        checkpointer.checkpoint([proc.pid], store, "pty", tree=True)
        image = load_image(store, "pty")
        [master] = [f for f in image.files if f["kind"] == "pty_master"]
        [leader_meta] = [p for p in image.processes if p.get("ctty")]
        assert leader_meta["ctty"] == {"pts": master["index"], "foreground": session[1]}
    finally:
        procs.kill(proc)
        for pid in session:
            os.kill(pid, signal.SIGKILL)
        subreaper(session)
    size = out.stat().st_size
    restored = checkpointer.restore(store, "pty")
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 200 * LINE, "200 exchanges over the restored pty")
    assert assert_unbroken(out, proc.pid) > size // LINE + 190


READERS = pytest.mark.parametrize("reader", ["non-canonical", "canonical"])


def _checkpoint_waiting_pty(procs, store, tmp_path, reader: str) -> tuple:
    """pty_waiting.py, checkpointed while output waits at its master and input at its
    slave (read as it comes, or in lines: `reader`): (process, its slave-side child,
    output file, go file)."""
    out, go = tmp_path / "waiting.out", tmp_path / "go"
    proc = procs.python("pty_waiting.py", str(out), str(go), *(["canonical"] if reader == "canonical" else []))
    wait_for(lambda: out.exists() and out.read_text() == "waiting\n", "bytes waiting both ways in the pty")
    [child] = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, "waiting", tree=True)
    return proc, child, out, go


def _both_queues_read(out) -> list[str]:
    wait_for(lambda: out.read_text().count("\n") >= 3, "the bytes read after the checkpoint")
    return out.read_text().splitlines()


@READERS
def test_a_checkpoint_leaves_the_bytes_waiting_in_a_pty_where_they_were(procs, store, tmp_path, subreaper, reader):
    """Reading what waits in a pty takes it out: the checkpoint puts it back, unprocessed
    (for a reader of lines: its lines and the unfinished one)."""
    proc, child, out, go = _checkpoint_waiting_pty(procs, store, tmp_path, reader)
    try:
        go.touch()
        assert _both_queues_read(out) == ["waiting", "output ok", "input ok"]
    finally:
        _kill(procs, proc, child, subreaper)


def _kill(procs, proc, child: int, subreaper) -> None:
    procs.kill(proc)
    with contextlib.suppress(ProcessLookupError):    # it has exited once it had read
        os.kill(child, signal.SIGKILL)
    subreaper([child])


@READERS
def test_bytes_waiting_in_a_pty_both_ways_come_back_with_it(procs, store, tmp_path, subreaper, reader):
    """A program that saw its terminal readable reads it next: the restored pair holds the
    same bytes, or that read waits for ever (a line reader: the line being typed too)."""
    proc, child, out, go = _checkpoint_waiting_pty(procs, store, tmp_path, reader)
    _kill(procs, proc, child, subreaper)
    restored = checkpointer.restore(store, "waiting")
    procs.restored.append(restored)
    assert not restored.warnings
    go.touch()
    assert _both_queues_read(out) == ["waiting", "output ok", "input ok"]
