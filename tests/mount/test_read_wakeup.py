"""The serving thread's reads are interrupted a few times a second (mount.read_wakeup),
so a read that blocks while holding the GIL, as pyfuse3's read of /dev/fuse does when
the request that woke it was withdrawn, cannot freeze the daemon."""
from __future__ import annotations

import subprocess
import sys

PRELUDE = """
import ctypes, errno, os, time
from mount.read_wakeup import INTERVAL_S, interrupting_reads
libc = ctypes.PyDLL(None, use_errno=True)     # PyDLL: the GIL stays held, as in pyfuse3
read_end, write_end = os.pipe()
buf = ctypes.create_string_buffer(1)
"""


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout.strip()


def test_a_read_blocked_with_the_gil_held_is_interrupted():
    assert run("""
with interrupting_reads():
    result = libc.read(read_end, buf, 1)
print(result, errno.errorcode.get(ctypes.get_errno()))
""") == "-1 EINTR"


def test_the_timer_ends_with_the_block():
    # after the block the signal's handler is the default again (which would end the
    # process), so a signal still coming would kill it
    assert run("""
with interrupting_reads():
    pass
time.sleep(3 * INTERVAL_S)
os.write(write_end, b"x")
print(libc.read(read_end, buf, 1))
""") == "1"
