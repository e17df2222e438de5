"""Linux native AIO contexts (io_setup; libaio: MariaDB/MySQL InnoDB's native AIO, zdtm aio00
and aio01): a restored program keeps using its contexts, finds the completions it had not
reaped yet (a ring whose tail has wrapped round behind its head included), and a context
that is not the first the process made still answers to its id. A process whose direct I/O
may be in flight (an O_DIRECT file beside a context) is refused, saying why."""
from __future__ import annotations

import pytest

import checkpointer
from checkpointer import Unsupported, load_image

from ckpt_helpers import ok_lines, reads_after_a_restore, wait_for


def test_aio_contexts_keep_their_unreaped_events_after_a_restore(procs, store, binaries, tmp_path):
    out = tmp_path / "aio.out"
    proc = procs.start([str(binaries / "aio_user"), str(out)])
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == [f"ready {proc.pid}"], "the target to set up its contexts")
    checkpointer.checkpoint([proc.pid], store, "aio")
    rings = sorted(v["aio"]["id"] for v in load_image(store, "aio").processes[0]["vmas"] if v["kind"] == "aio")
    assert rings == [1, 2]
    procs.kill(proc)
    reads_after_a_restore(procs, store, "aio", out)


def test_aio_beside_direct_io_is_refused_naming_why(procs, store, binaries, tmp_path):
    out = tmp_path / "aio.out"
    proc = procs.start([str(binaries / "aio_user"), str(out), "direct"])
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == [f"ready {proc.pid}"], "the target to set up its contexts")
    with pytest.raises(Unsupported, match=f"process {proc.pid} has an AIO context .* open with O_DIRECT"):
        checkpointer.checkpoint([proc.pid], store, "aio")
    assert proc.poll() is None, "the refused process must go on running"
