"""An unlinked file that is both open and mapped (zdtm unlink_mmap02; a temporary file
used as scratch memory between a parent and a child) comes back as one file: a write
through the fd shows in a private mapping's untouched page and in another process's shared
mapping, and the reverse (it came back as two copies, each seeing only its own writes)."""
from __future__ import annotations

import checkpointer

from ckpt_helpers import children_of, ok_lines, reads_after_a_restore, wait_for


def test_an_unlinked_file_open_and_mapped_stays_one_file(procs, store, tmp_path, subreaper):
    out = tmp_path / "unlinked.out"
    proc = procs.python("unlinked_mapped.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"] and children_of(proc.pid),
             "the target to map, unlink and fork")
    children = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, "unlinked", tree=True)
    procs.kill(proc)
    subreaper(children)
    reads_after_a_restore(procs, store, "unlinked", out)
