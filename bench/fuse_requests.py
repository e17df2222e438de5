"""Count the FUSE requests the kernel sends to one mount, by kind, while a block runs.

    with FuseRequests(mountpoint) as seen:
        ...                      # work on the mount
    seen.per(rows)               # {"WRITE": 4.0, "SETATTR": 2.4, ...} or None

Reads the kernel's own record of what it sent (tracefs event fuse:fuse_request_send,
filtered on the mount's connection, in a trace instance of our own so that nobody
else's tracing is disturbed): requests answered without the daemon's Python code (an
IOCTL libfuse answers ENOSYS) count too, and nothing depends on the daemon's help.
Needs root and a kernel with the FUSE trace events (6.15+); without them `counts` stays
None and the benchmarks report the figure as not measured.
"""
from __future__ import annotations

import collections
import os
import re
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
EVENT = "events/fuse/fuse_request_send"
BUFFER_KB = 16384                 # per CPU: ~100 bytes an event, far more than a bench sends
_SENT = re.compile(r"opcode \d+ \(FUSE_(\w+)\)")


class FuseRequests:
    """Context manager: `counts` (a Counter of request kinds) after the block, or None."""

    def __init__(self, mountpoint: str | os.PathLike) -> None:
        self.connection = os.stat(mountpoint).st_dev
        self.instance = TRACEFS / "instances" / f"slsfs-bench-{os.getpid()}"
        self.counts: collections.Counter | None = None

    def __enter__(self) -> "FuseRequests":
        if not (TRACEFS / EVENT).is_dir():
            return self
        try:
            self.instance.mkdir()
        except OSError:                  # not root, or tracefs read-only
            return self
        (self.instance / "buffer_size_kb").write_text(str(BUFFER_KB))
        (self.instance / EVENT / "filter").write_text(f"connection == {self.connection}")
        (self.instance / EVENT / "enable").write_text("1")
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.instance.is_dir():
            return
        try:
            (self.instance / EVENT / "enable").write_text("0")
            trace = (self.instance / "trace").read_text()
            if "LOST" not in trace:      # an overrun buffer would undercount
                self.counts = collections.Counter(_SENT.findall(trace))
        finally:
            self.instance.rmdir()

    def per(self, units: float) -> dict[str, float] | None:
        """Requests of each kind per unit of work (e.g. per SQLite row), most frequent first."""
        if self.counts is None or units <= 0:
            return None
        return {kind: round(n / units, 2) for kind, n in self.counts.most_common()}
