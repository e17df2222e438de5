"""POSIX message queues (mq_open; checkpointer/posix_mqueue.py) come back with their
messages, priorities and order, size limits and owner, and each descriptor with its access
mode and O_NONBLOCK: in a new IPC namespace for a tree that had its own (a group's), and in
the host's set back to the checkpoint's messages (the killed original's queue outlives it,
with whatever was sent since). A queue that had been unlinked comes back unlinked."""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest

import checkpointer
from ckpt_helpers import wait_for

TARGET = Path(__file__).parent / "targets" / "mqueue_user.py"
librt = ctypes.CDLL("librt.so.1", use_errno=True)
librt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]


@pytest.mark.parametrize("namespace", ["own", "host"])
def test_message_queues_come_back_with_their_messages_in_order(procs, store, tmp_path, namespace):
    out, name = tmp_path / "mq.out", f"/slsfs-test-{os.getpid()}"
    proc = procs.start([*(["unshare", "--ipc"] if namespace == "own" else []), sys.executable, str(TARGET),
                        str(out), name])
    try:
        wait_for(lambda: out.exists() and out.read_text() == "ready\n", "the target to fill its queues")
        checkpointer.checkpoint([proc.pid], store, "before", tree=True)   # reads the queues and puts them back
        checkpointer.checkpoint([proc.pid], store, "mq", tree=True)
        procs.kill(proc)
        if namespace == "host":     # the original's queue, moved on since the checkpoint
            queue = librt.mq_open(name.encode(), os.O_WRONLY, 0, None)
            assert queue >= 0 and librt.mq_send(queue, b"late", 4, 9) == 0
            os.close(queue)
        restored = checkpointer.restore(store, "mq")
        procs.restored.append(restored)
        assert restored.warnings == []
        Path(f"{out}.go").touch()
        wait_for(lambda: len(out.read_text().splitlines()) == 2, "the restored target to take its messages")
        assert out.read_text().splitlines()[1] == "b5 a1 c1 x3 gone2 nonblock 6 64"
    finally:
        librt.mq_unlink(name.encode())      # (the host's; a namespace's goes with it)
