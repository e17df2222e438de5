"""Mapping flags /proc/PID/maps does not show (smaps' VmFlags). What a fork does with a
mapping (zdtm maps11): memory under MADV_WIPEONFORK comes back empty in a child forked after
a restore (a library's random-number state must not be shared by parent and child: OpenSSL,
BoringSSL, LibreSSL), memory under MADV_DONTFORK is not in such a child at all, and
MAP_DROPPABLE memory (glibc's getrandom state) is empty after a restore, as the kernel may
leave it at any time: two processes restored from one image must not draw the same random
numbers from it. And MAP_GROWSDOWN memory still grows down (zdtm grow_map)."""
from __future__ import annotations

import pytest

import checkpointer
from checkpointer import load_image

from ckpt_helpers import assert_unbroken, ok_lines, restored_goes_on, wait_for


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_a_fork_after_a_restore_wipes_and_leaves_out_what_the_program_asked(procs, store, binaries, tmp_path, lazy):
    out = tmp_path / "advice.out"
    proc = procs.start([str(binaries / "fork_advice"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to fork and check")
    checkpointer.checkpoint([proc.pid], store, "advice", tree=True)   # a child it has forked, or a zombie, too
    [parent] = [p for p in load_image(store, "advice").processes
                 if p.get("host_pid") == proc.pid]    # (a zombie child's record has no host pid)
    flags = sorted(tuple(sorted(v["vm_flags"])) for v in parent["vmas"]
                   if "vm_flags" in v)
    assert flags == [("dontdump", "droppable", "noreserve", "wipeonfork"), ("dontfork",), ("wipeonfork",)]
    procs.kill(proc)
    before = len(ok_lines(out))
    procs.restored.append(checkpointer.restore(store, "advice", lazy=lazy))
    wait_for(lambda: len(ok_lines(out)) >= before + 20 or "BAD" in out.read_text(), "the restored target to fork")
    assert assert_unbroken(out, proc.pid) >= before + 20   # (no BAD line: every child saw what it must)
    states = [line.split()[2] for line in ok_lines(out)]
    assert states[0] == "kept", "the droppable page was empty before any checkpoint"
    assert set(states[before:]) == {"empty"}, "the droppable page came back with its old contents"


def test_a_mapping_that_grows_down_still_grows_after_a_restore(procs, store, binaries, tmp_path):
    """MAP_GROWSDOWN memory other than the main stack (zdtm grow_map): a restore made it a
    plain mapping, and the next touch below it killed the process (SIGSEGV)."""
    out = tmp_path / "grows.out"
    proc = procs.start([str(binaries / "grows_down"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "the mapping to grow")
    checkpointer.checkpoint([proc.pid], store, "grows")
    assert sum(v["growsdown"] for v in load_image(store, "grows").processes[0]["vmas"]) == 2   # and [stack]
    procs.kill(proc)
    restored_goes_on(procs, store, "grows", out)


# smaps' VmFlags of each mapping of targets/advised.c, by its name there
ADVISED = {"locked": {"lo"}, "lockonfault": {"lo", "lf"}, "dontdump": {"dd"}, "noreserve": {"nr"},
           "hugepage": {"hg"}, "nohugepage": {"nh"}, "mergeable": {"mg"}, "sequential": {"sr"}, "random": {"rr"},
           "locked_none": {"lo"}}


def _vm_flags(pid: int, addresses: dict[str, int]) -> dict[str, set[str]]:
    """The VmFlags (of those in ADVISED) of the mapping holding each address, from smaps."""
    mappings, extent = [], None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if line.startswith("VmFlags:"):
                mappings.append((*extent, set(line.split()[1:])))
            elif "-" in line.split(None, 1)[0]:
                extent = [int(x, 16) for x in line.split(None, 1)[0].split("-")]
    wanted = set().union(*ADVISED.values())
    return {name: next(flags for start, end, flags in mappings if start <= address < end) & wanted
            for name, address in addresses.items()}


def test_locked_and_advised_memory_is_locked_and_advised_after_a_restore(procs, store, binaries, tmp_path):
    """mlock (keys kept out of swap), MADV_DONTDUMP (secrets kept out of core dumps),
    MAP_NORESERVE (huge sparse reservations), huge-page, KSM and access advice: the restored
    mappings have the VmFlags the original's had (zdtm maps02, mlock_setuid). A locked
    inaccessible mapping too (a thread stack's guard page under mlockall(MCL_FUTURE):
    stress-ng --mlock; the restore failed on the ENOMEM mlock answers for it)."""
    out = tmp_path / "advised.out"
    proc = procs.start([str(binaries / "advised"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) > len(ADVISED), "the target's mappings")
    addresses = {line.split()[0]: int(line.split()[1], 16) for line in ok_lines(out)[:len(ADVISED)]}
    original = _vm_flags(proc.pid, addresses)
    assert original == ADVISED, "the kernel did not give the mappings the flags the test expects"
    checkpointer.checkpoint([proc.pid], store, "advised")
    procs.kill(proc)
    restored = restored_goes_on(procs, store, "advised", out)
    assert _vm_flags(restored.pids[0], addresses) == original
