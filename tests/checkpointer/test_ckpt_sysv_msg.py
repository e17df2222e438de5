"""A process using a SysV message queue is refused at checkpoint time, naming the queue:
the queue is not in the image, and after a crash it would hold messages sent after the
checkpoint (stress-ng --msg read the wrong ones after a restore)."""
from __future__ import annotations

import ctypes

import pytest

import checkpointer
from checkpointer import Unsupported
from ckpt_helpers import ok_lines, wait_for

IPC_RMID = 0


def test_a_process_using_a_message_queue_is_refused_by_name(procs, store, binaries, tmp_path):
    out = tmp_path / "msg.out"
    proc = procs.start([str(binaries / "msg_queue"), str(out)])
    try:
        wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "the target to use its queue")
        msqid = int(out.read_text().split()[1])
        with pytest.raises(Unsupported, match=f"SysV message queue {msqid} "):
            checkpointer.checkpoint([proc.pid], store, "msg")
        assert "img/msg" not in store.roots(), "a refused checkpoint left an image"
        before = len(ok_lines(out))
        wait_for(lambda: len(ok_lines(out)) > before + 5, "the target to go on after the refusal")
    finally:
        procs.kill(proc)
        if out.exists() and out.read_text().startswith("queue "):
            ctypes.CDLL(None).msgctl(int(out.read_text().split()[1]), IPC_RMID, None)
