"""checkpointer.pageread against a real process's memory: every page asked for comes back
at its address with its contents, whatever the shape of the ranges (scattered single
pages, adjacent ranges, ranges longer than a run, more runs than one read takes, more
bytes than one read holds), and pages process_vm_readv may not read (PROT_NONE) come
through /proc/PID/mem."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from checkpointer import pageread
from checkpointer.copybuffer import CopyBuffer
from checkpointer.kernel import PAGE_SIZE

PAGES = 4096                     # 16 MiB: more than READ_BATCH_BYTES
HOLDER = f"""
import ctypes, mmap, sys
area = mmap.mmap(-1, {PAGES * PAGE_SIZE})
for page in range({PAGES}):                        # each page tells its own number
    area[page * {PAGE_SIZE}:page * {PAGE_SIZE} + 8] = page.to_bytes(8, "little")
hidden = mmap.mmap(-1, 2 * {PAGE_SIZE})
hidden[:8] = b"hidden-1"
hidden[{PAGE_SIZE}:{PAGE_SIZE} + 8] = b"hidden-2"
libc = ctypes.CDLL(None, use_errno=True)
base = ctypes.addressof(ctypes.c_char.from_buffer(area))
hidden_at = ctypes.addressof(ctypes.c_char.from_buffer(hidden))
assert libc.mprotect(ctypes.c_void_p(hidden_at), 2 * {PAGE_SIZE}, 0) == 0   # PROT_NONE
print(base, hidden_at, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder():
    """A process with numbered pages and two PROT_NONE pages holding data: (pid, base, hidden)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        base, hidden = map(int, proc.stdout.readline().split())
        yield proc.pid, base, hidden
    finally:
        proc.kill()
        proc.wait()


def _pages(pid: int, ranges: list[tuple[int, int]], buffers: CopyBuffer | None = None) -> dict[int, bytes]:
    got: dict[int, bytes] = {}

    def sink(start: int, data: bytes) -> None:
        assert len(data) % PAGE_SIZE == 0 and len(data) <= pageread.MAX_RUN
        for at in range(0, len(data), PAGE_SIZE):
            assert start + at not in got, "a page handed over twice"
            got[start + at] = bytes(data[at:at + PAGE_SIZE])
    pageread.copy_pages(pid, ranges, sink, buffers)
    return got


def _numbered(base: int, pages) -> dict[int, bytes]:
    return {base + p * PAGE_SIZE: p.to_bytes(8, "little") + bytes(PAGE_SIZE - 8) for p in pages}


@pytest.mark.parametrize("shape", ["scattered", "adjacent", "long", "many_runs", "whole"])
def test_every_page_asked_for_comes_back_with_its_contents(holder, shape):
    pid, base, _ = holder
    if shape == "scattered":          # single pages, none touching: the runs are the ranges
        pages = list(range(0, PAGES, 3))[:700]
    elif shape == "adjacent":         # ranges that touch: joined into runs
        pages = [p for p in range(200) if p % 5 != 4]
    elif shape == "long":             # one range longer than MAX_RUN: cut
        pages = list(range(10, 10 + 3 * pageread.MAX_RUN // PAGE_SIZE + 7))
    elif shape == "many_runs":        # more runs than IOV_MAX: several reads
        pages = list(range(0, PAGES, 2))[:pageread.IOV_MAX + 300]
    else:                             # more bytes than READ_BATCH_BYTES: several reads
        pages = list(range(PAGES))
    if shape == "adjacent":
        ranges = [(base + p * PAGE_SIZE, base + (p + 1) * PAGE_SIZE) for p in pages]
    else:
        ranges = []
        for p in pages:
            if ranges and ranges[-1][1] == base + p * PAGE_SIZE:
                ranges[-1] = (ranges[-1][0], base + (p + 1) * PAGE_SIZE)
            else:
                ranges.append((base + p * PAGE_SIZE, base + (p + 1) * PAGE_SIZE))
    buffers = CopyBuffer()
    buffers.prepare()
    assert _pages(pid, ranges, buffers) == _numbered(base, pages)


def test_pages_under_prot_none_are_read_through_the_mem_file(holder):
    pid, base, hidden = holder
    ranges = [(base, base + PAGE_SIZE), (hidden, hidden + 2 * PAGE_SIZE), (base + 9 * PAGE_SIZE, base + 10 * PAGE_SIZE)]
    got = _pages(pid, ranges)
    assert got[hidden][:8] == b"hidden-1" and got[hidden + PAGE_SIZE][:8] == b"hidden-2"
    assert {addr: got[addr] for addr in (base, base + 9 * PAGE_SIZE)} == _numbered(base, [0, 9])


def test_reads_planned_here_and_made_elsewhere_keep_their_pages_until_cut(holder):
    """The stop's split (snapshot.PageCopy): plan in the tracer, read_all in the worker,
    runs cut later; nothing is read twice or lost on the way."""
    pid, base, _ = holder
    ranges = [(base + p * PAGE_SIZE, base + (p + 1) * PAGE_SIZE) for p in range(0, 64, 2)]
    reads = pageread.plan(ranges)
    assert all(read.done == -1 for read in reads)
    pageread.read_all(pid, reads)
    rest: list[int] = []
    pageread.read_rest(pid, reads, lambda start, data: rest.append(start))
    assert rest == []
    got = {start: bytes(data) for start, data in pageread.runs(reads)}
    assert got == _numbered(base, range(0, 64, 2))


@given(st.lists(st.tuples(st.sampled_from([0, 0, 1, 3, 300]),
                          st.sampled_from([1, 2, 255, 256, 257, 512, 600]) | st.integers(1, 2000)), max_size=40))
@settings(max_examples=300, deadline=None)
def test_runs_join_touching_ranges_and_cut_long_ones(shape):
    """The runs a copy reads: the ranges' pages, touching ranges joined, then cut into
    pieces of MAX_RUN (the last one shorter), in address order."""
    ranges, at = [], 1 << 30
    for gap, length in shape:          # (pages between this range and the last, its pages)
        at += gap * PAGE_SIZE
        ranges.append((at, at + length * PAGE_SIZE))
        at += length * PAGE_SIZE
    joined: list[list[int]] = []
    for start, end in ranges:
        if joined and joined[-1][1] == start:
            joined[-1][1] = end
        else:
            joined.append([start, end])
    expected = [(at, min(pageread.MAX_RUN, end - at)) for start, end in joined
                for at in range(start, end, pageread.MAX_RUN)]
    starts, lengths = pageread._runs(ranges)
    assert list(zip(starts, lengths)) == expected
