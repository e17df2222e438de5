"""How far long work has come, on a terminal: one line on stderr, rewritten in place.

`line(message)` shows a message (gc and fsck say what they do), `bytes_counter(verb)`
makes a callback for work that counts bytes (send, recv: a few updates a second, with
the rate), and `done()` ends the line so that the command's own last words start on a
fresh one. Off a terminal (a script, a pipe into a log) nothing is written.
"""
from __future__ import annotations

import sys
import time

WIDTH = 60          # a message is padded to this many columns: a shorter one hides a longer one before it
BYTES_EVERY_S = 0.25


def line(message: str) -> None:
    if sys.stderr.isatty():
        print(f"\r{message}".ljust(WIDTH), end="", file=sys.stderr, flush=True)


def bytes_counter(verb: str):
    """A callback taking the bytes done so far that shows them as '<verb>: N MiB (R MiB/s)',
    or None off a terminal."""
    if not sys.stderr.isatty():
        return None
    started = last = time.monotonic()

    def told(done: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= BYTES_EVERY_S:
            last = now
            line(f"{verb}: {done / 2**20:.1f} MiB ({done / 2**20 / (now - started):.0f} MiB/s)")
    return told


def done() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)
