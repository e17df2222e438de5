"""The memory a stop (or a pre-copy) copies pages into (checkpointer/copybuffer.py) is
prepared before the freeze and never handed out again while a slice of it is held: pages
of one checkpoint, still waiting to be stored after the thaw, must not be overwritten by
the copies of the next one; once they are let go, the same memory serves again (its pages
in already). It covers the most a recent stop asked for (the amount varies from stop to
stop); beyond it a stop gets fresh zero pages."""
from __future__ import annotations

import ctypes

from checkpointer.copybuffer import MARGIN_BYTES, RECENT_STOPS, CopyBuffer


def test_a_slice_handed_out_is_never_handed_out_again():
    buffers = CopyBuffer()
    first = buffers.take(8192)          # nothing prepared yet: a fresh buffer
    first[:] = b"a" * 8192
    buffers.prepare()                   # sized from what that stop asked for
    second = buffers.take(8192)
    second[:] = b"b" * 8192
    buffers.prepare()
    third = buffers.take(4096)
    third[:] = b"c" * 4096
    fourth = buffers.take(MARGIN_BYTES * 4)   # more than was prepared: fresh memory
    fourth[:] = b"d" * len(fourth)
    assert bytes(first) == b"a" * 8192
    assert bytes(second) == b"b" * 8192
    assert bytes(third) == b"c" * 4096


def test_memory_let_go_is_used_again_and_memory_held_is_not():
    buffers = CopyBuffer()
    buffers.take(1 << 20)
    buffers.prepare()
    first = buffers.take(1 << 20)
    first[:] = b"a" * len(first)
    address = ctypes.addressof(ctypes.c_char.from_buffer(first))
    arena = first.obj
    del first                           # stored: nothing holds it any more
    buffers.prepare()
    again = buffers.take(1 << 20)
    assert again.obj is arena and ctypes.addressof(ctypes.c_char.from_buffer(again)) == address
    held = again[:4096]                 # a page of it still waits to be stored
    del again
    buffers.prepare()
    later = buffers.take(1 << 20)
    later[:] = b"b" * len(later)
    assert bytes(held) == b"a" * 4096


def test_the_prepared_buffer_covers_what_the_last_stop_asked_for():
    buffers = CopyBuffer()
    for _ in range(3):
        buffers.take(1 << 20)
    buffers.prepare()
    parts = [buffers.take(1 << 20) for _ in range(3)]
    assert parts[0].obj is parts[2].obj     # all from the prepared buffer


def test_the_prepared_buffer_covers_the_most_a_recent_stop_asked_for():
    buffers = CopyBuffer()
    buffers.take(4 << 20)                   # a burst of writes
    buffers.prepare()
    for _ in range(RECENT_STOPS - 1):       # then quieter stops
        buffers.take(1 << 20)
        buffers.prepare()
    parts = [buffers.take(1 << 20) for _ in range(4)]
    assert parts[0].obj is parts[3].obj, "a stop asking as much as a recent one did got fresh memory"


def test_memory_beyond_the_prepared_buffer_is_zeroed_writable_and_of_the_size_asked():
    buffers = CopyBuffer()
    buffers.take(8192)
    buffers.prepare()
    beyond = buffers.take(MARGIN_BYTES * 8 + 4096)
    assert len(beyond) == MARGIN_BYTES * 8 + 4096 and not beyond.readonly
    assert beyond.tobytes() == bytes(len(beyond))
    beyond[-4096:] = b"e" * 4096
    assert bytes(beyond[-4096:]) == b"e" * 4096
