"""O_ASYNC owners (zdtm file_fown): a file's F_SETOWN owner and F_SETSIG signal are kept, so
a restored program that waits for SIGIO-style signals on a pipe still gets them."""
from __future__ import annotations

import checkpointer
from checkpointer import load_image

from ckpt_helpers import ok_lines, restored_goes_on, wait_for


def test_the_owner_and_signal_of_an_async_pipe_come_back(procs, store, tmp_path):
    out = tmp_path / "fown.out"
    proc = procs.python("async_owner.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to get its signals")
    checkpointer.checkpoint([proc.pid], store, "fown")
    pid = load_image(store, "fown").processes[0]["pid"]
    owners = [f["fown"] for f in load_image(store, "fown").files if "fown" in f]
    assert owners == [[1, pid, 12]]     # F_OWNER_PID, the process itself, SIGUSR2
    procs.kill(proc)
    restored_goes_on(procs, store, "fown", out)
