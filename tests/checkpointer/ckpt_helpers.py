"""Helpers of the checkpointer tests (a module with a unique name: every test layer has
its own conftest.py, so tests import these from here rather than from `conftest`)."""
from __future__ import annotations

import os
from pathlib import Path

import checkpointer
from polling import wait_for  # noqa: F401  (re-exported: the tests import it from here)

# The arguments after OUTFILE of a counter (targets/counter.c) with a 64 MiB heap that
# checks 1 MiB of it per line: any HEAP_CHECK_LINES lines in a row have checked it all.
BIG_HEAP = ("64", "1024")
HEAP_CHECK_LINES = 70


def ok_lines(path: Path) -> list[str]:
    """Complete lines of a target's output file."""
    text = path.read_text(errors="replace")
    return text.split("\n")[:-1]


def assert_unbroken(path: Path, pid: int) -> int:
    """The file holds one unbroken sequence 1..N of "<n> <pid> ... ok" lines; returns N."""
    expected = 1
    for line in ok_lines(path):
        assert "BAD" not in line, f"target reported: {line}"
        if line.startswith("usr1"):
            continue
        fields = line.split()
        assert fields[-1] == "ok" and int(fields[0]) == expected and int(fields[1]) == pid, \
            f"line {expected} of {path.name} is {line!r}"
        expected += 1
    return expected - 1


def restored_goes_on(procs, store, name: str, out: Path):
    """Restore the image `name` (its processes already killed) and wait until the restored
    target has written 200 more bytes to its output `out`, no line of it BAD; the Restored."""
    restored = checkpointer.restore(store, name)
    procs.restored.append(restored)
    size = out.stat().st_size
    wait_for(lambda: out.stat().st_size > size + 200 or "BAD" in out.read_text(errors="replace"),
             "the restored process to go on")
    bad = [line for line in ok_lines(out) if "BAD" in line]
    assert not bad, f"the target reported: {bad[:3]}"
    return restored


def reads_after_a_restore(procs, store, name: str, out: Path):
    """Restore the image `name` (its processes already killed), let the restored target
    read what it holds (a "read-now" file beside `out`, which it removes) and wait for its
    verdict: "read ok", no BAD line. The Restored."""
    restored = checkpointer.restore(store, name)
    procs.restored.append(restored)
    (out.parent / "read-now").touch()
    wait_for(lambda: "read ok" in ok_lines(out) or any("BAD" in line for line in ok_lines(out)),
             "the restored process to read what it holds")
    bad = [line for line in ok_lines(out) if "BAD" in line]
    assert not bad, f"the target reported: {bad[:3]}"
    return restored


def goes_on_after_a_restore(procs, store, proc, out: Path, name: str, what: str, tree: bool = False):
    """Once the self-checking target `proc` has written 10 lines to `out` (`what` it does
    meanwhile): checkpoint it (`tree`: with its descendants) as `name`, kill it, and
    restored_goes_on; the Restored."""
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, what)
    checkpointer.checkpoint([proc.pid], store, name, tree=tree)
    procs.kill(proc)
    return restored_goes_on(procs, store, name, out)


def reads_back_after_a_restore(procs, store, proc, out: Path, name: str, what: str):
    """Once the self-checking target `proc` has written 10 lines to `out` (`what` it does
    meanwhile): checkpoint it as `name`, kill it, and reads_after_a_restore; the Restored."""
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, what)
    checkpointer.checkpoint([proc.pid], store, name)
    procs.kill(proc)
    return reads_after_a_restore(procs, store, name, out)


def ns_pid(host_pid: int) -> int:
    """The PID a process sees for itself (innermost NSpid)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


def children_of(pid: int) -> list[int]:
    """The children of every thread of `pid` (none if it is gone)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return children


def state_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def pagemap_fds() -> int:
    """How many /proc/PID/pagemap descriptors this process holds open."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}").endswith("/pagemap")
        except OSError:
            continue
    return count
