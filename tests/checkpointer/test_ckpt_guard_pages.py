"""Guard pages (madvise MADV_GUARD_INSTALL) cannot be kept yet: an image would bring them
back as ordinary memory, the guard gone (a silent change). A checkpoint refuses them by
name. (Installed in memory that write tracking already follows, they are refused too, but
this kernel spins in that madvise for as long as the tracking lasts: not testable here.)"""
from __future__ import annotations

import pytest

import checkpointer

from ckpt_helpers import wait_for


@pytest.mark.parametrize("memory", ["private", "shared"])
def test_guard_pages_are_refused_by_name(procs, store, tmp_path, memory):
    out, go = tmp_path / "guard.out", tmp_path / "go"
    proc = procs.python("guard_pages.py", str(out), str(go), memory)
    wait_for(lambda: out.exists() and "mapped" in out.read_text(), "the target to map its pages")
    go.touch()
    wait_for(lambda: "guarded" in out.read_text(), "the target to install its guard pages")
    assert "BAD" not in out.read_text()
    with pytest.raises(checkpointer.Unsupported, match=r"guard pages \(madvise MADV_GUARD_INSTALL\)"):
        checkpointer.checkpoint([proc.pid], store, "guard")
