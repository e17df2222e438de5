"""`wait_for`: the one way the tests wait for something to happen (a mount to appear, a
process to reach a line, a daemon to answer), shared by every layer's helpers."""
from __future__ import annotations

import time


def wait_for(predicate, what: str, timeout: float = 60.0):
    """Poll until predicate() is truthy and return its value; after `timeout` seconds,
    an AssertionError naming `what` (the test fails with it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
