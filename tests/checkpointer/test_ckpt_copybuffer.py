"""The memory a stop copies pages into (checkpointer/copybuffer.py) is prepared before the
freeze and never handed out twice: pages of one checkpoint, still waiting to be stored
after the thaw, must not be overwritten by the copies of the next one."""
from __future__ import annotations

from checkpointer.copybuffer import MARGIN_BYTES, CopyBuffer


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


def test_the_prepared_buffer_covers_what_the_last_stop_asked_for():
    buffers = CopyBuffer()
    for _ in range(3):
        buffers.take(1 << 20)
    buffers.prepare()
    parts = [buffers.take(1 << 20) for _ in range(3)]
    assert all(isinstance(part, memoryview) for part in parts)   # all from the prepared buffer
    assert len({part.obj.__class__ for part in parts}) == 1
    assert parts[0].obj is parts[2].obj
