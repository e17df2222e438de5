"""O_DIRECT writes and the pages buffered readers cached (Operations._after_direct_write).

A Linux AIO O_DIRECT write is answered by the kernel before it is done, and it drops the
file's cached pages only before it: a buffered read while the write is in flight caches
the old data, which every later buffered read would see (xfstests generic/451). The
race is made deterministic by direct_write_race.py (a userfaultfd holds the writer
between the kernel's drop and its WRITE request).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RACE = Path(__file__).with_name("direct_write_race.py")


def test_buffered_readers_see_an_async_direct_write_that_raced_a_read(mnt):
    result = subprocess.run([sys.executable, str(RACE), str(mnt.path / "raced")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["read_during_write"] is True        # the race happened: the old data was read
    assert seen["written"] == 64 * 1024
    assert seen["stale_pages_held_open"] == 0, seen  # the descriptor that had read before
    assert seen["stale_pages_new_open"] == 0, seen
