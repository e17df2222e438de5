"""Memory a restored child keeps from its parent, as a fork left it: copy-on-write sharing.

What: a process whose parent is in the image is cloned (builder.clone) from that parent
once the parent's memory is built (restore.py), so it starts with a copy-on-write copy
of all of it. `kept_ranges` names the child's private mappings (anonymous, or of a file)
that lie inside a parent's mapping of the same kind, protection, flags (and file and
offset): those are left in place (not unmapped, not mapped afresh). `Unchanged` filters the child's pages to write: a page whose
bytes are already there (the parent's, inherited) is not written, so it stays one physical
page shared with the parent, as it was before the checkpoint; `to_drop` then gives the
inherited pages that the child's image does not hold (zero in the child), which are
dropped (MADV_DONTNEED: zero-filled again, or the file's page again).
Why: a pre-forking server (nginx, PostgreSQL, gunicorn with preload) shares most of its
workers' memory with their master; restored with every page written anew, each worker
held its own copy, N times the memory.
Simplification: pages are compared by their bytes, not by whether they were the same
physical page at the checkpoint: a page a child wrote back with the same bytes is shared
again (a gain, never a wrong byte; a private file page equal to the file's is the file's
page again, which shows later changes of the file, as any page a program has not written).
Shared and special mappings, private ones with fork-related flags (MADV_DONTFORK,
MADV_WIPEONFORK, MAP_DROPPABLE), and everything in a lazy restore are made as before.
"""
from __future__ import annotations

from typing import Iterator

from . import procfs
from .kernel import PAGE_SIZE
from .stub import STUB_BASE, STUB_SIZE

UNSHARED_FLAGS = frozenset({"dontfork", "wipeonfork", "droppable"})


def _plain(vma: dict) -> bool:
    return vma["kind"] in ("anon", "file") and not vma["shared"] and not UNSHARED_FLAGS & set(vma.get("vm_flags", ()))


def _within(vma: dict, parent: dict) -> bool:
    """Whether the parent's mapping holds the child's: same memory at the same addresses."""
    return (parent["start"] <= vma["start"] and vma["end"] <= parent["end"]
            and all(parent.get(key) == vma.get(key) for key in ("kind", "prot", "growsdown", "vm_flags", "path"))
            and (vma["kind"] == "anon" or parent["offset"] + vma["start"] - parent["start"] == vma["offset"]))


def may_share(meta: dict, processes: list[dict]) -> bool:
    """Whether the process of `meta` is worth building before its children are cloned from
    it: a live child would keep some of its memory; and the restore stub's code (which the
    children's stubs run) can stay mapped in it meanwhile, clear of its own mappings."""
    if any(v["start"] < STUB_BASE + STUB_SIZE and STUB_BASE < v["end"] for v in meta["vmas"]):
        return False
    return any(child["ppid"] == meta["pid"] and not child.get("zombie") and kept_ranges(child, meta)
               for child in processes)


def kept_ranges(meta: dict, parent: dict) -> list[tuple[int, int]]:
    """The child's mappings (start, end) kept from its parent's memory (see the module)."""
    theirs = [v for v in parent["vmas"] if _plain(v)]
    return [(vma["start"], vma["end"]) for vma in meta["vmas"] if _plain(vma) and any(_within(vma, p) for p in theirs)]


def outside(start: int, end: int, kept: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, end) outside every kept range."""
    pieces = []
    for low, high in sorted(kept):
        if high <= start or end <= low:
            continue
        if start < low:
            pieces.append((start, low))
        start = max(start, high)
    if start < end:
        pieces.append((start, end))
    return pieces


class Unchanged:
    """The page runs to write, less the pages of kept ranges that already hold their bytes
    (read through `read(address, size)`, the child's memory); `covered` collects every
    page of a kept range the image holds, written or not."""

    def __init__(self, kept: list[tuple[int, int]], read):
        self.kept, self.read = sorted(kept), read
        self.covered: set[int] = set()

    def _inside(self, address: int, end: int | None = None) -> bool:
        end = address + 1 if end is None else end
        return any(start < end and address < stop for start, stop in self.kept)

    def filter(self, runs: Iterator[tuple[int, list[bytes]]]) -> Iterator[tuple[int, list[bytes]]]:
        for address, pages in runs:
            if not self._inside(address, address + len(pages) * PAGE_SIZE):
                yield address, pages
                continue
            run_start, run = address, []
            for at, page in zip(range(address, address + len(pages) * PAGE_SIZE, PAGE_SIZE), pages):
                if self._inside(at):
                    self.covered.add(at)
                    if self.read(at, PAGE_SIZE) == page:
                        if run:
                            yield run_start, run
                        run = []
                        continue
                if not run:
                    run_start = at
                run.append(page)
            if run:
                yield run_start, run

    def to_drop(self, tid: int) -> list[tuple[int, int]]:
        """The inherited pages (present or swapped in the child) of kept ranges that the
        image does not hold, as ranges."""
        drop: list[tuple[int, int]] = []
        with procfs.pagemap(tid) as fd:
            for start, end in self.kept:
                found = procfs.page_ranges(fd, start, end, procfs.PAGE_IS_PRESENT | procfs.PAGE_IS_FILE,
                                           inverted=procfs.PAGE_IS_FILE)      # (a file's own pages stay)
                found += procfs.page_ranges(fd, start, end, procfs.PAGE_IS_SWAPPED)
                for low, high, _ in sorted(found):
                    for at in range(low, high, PAGE_SIZE):
                        if at in self.covered:
                            continue
                        if drop and drop[-1][1] == at:
                            drop[-1] = (drop[-1][0], at + PAGE_SIZE)
                        else:
                            drop.append((at, at + PAGE_SIZE))
        return drop
