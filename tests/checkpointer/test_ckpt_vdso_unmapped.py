"""A process without a [vdso] (it unmapped it, as on a kernel booted with vdso=0; zdtm's
vdso02) is checkpointed (the injected calls use a `syscall` instruction of its own code)
and restored without one (the restorer's vdso and vvar are unmapped, not moved)."""
from __future__ import annotations

from ckpt_helpers import assert_unbroken, goes_on_after_a_restore


def test_a_process_that_unmapped_its_vdso_is_checkpointed_and_restored_without_one(procs, store, binaries, tmp_path):
    out = tmp_path / "out"
    proc = procs.start([str(binaries / "vdso_unmapped"), str(out)])
    restored = goes_on_after_a_restore(procs, store, proc, out, "novdso", "the target to count")
    assert "[vdso]" not in open(f"/proc/{restored.pids[0]}/maps").read()
    assert assert_unbroken(out, proc.pid) > 10     # (the target checks its maps itself at each line too)
