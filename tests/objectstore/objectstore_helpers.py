"""Helpers shared by the object store tests (a uniquely named module: every layer
has a conftest.py, so `from conftest import ...` would be ambiguous)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# CI must be deterministic: hypothesis draws the same examples every run unless
# SLSFS_HYPOTHESIS_RANDOM=1 asks it to explore (do that when hunting bugs).
DERANDOMIZE = os.environ.get("SLSFS_HYPOTHESIS_RANDOM") != "1"


class TempDir:
    """A temporary directory for one hypothesis example (pytest's tmp_path is per test)."""

    def __init__(self, prefix: str):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def pack_files(store_path: Path) -> list[Path]:
    return sorted((store_path / "packs").glob("pack-*.pack"))


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())


def advance(steps, count: int = 1) -> bool:
    """`count` steps of a collection's `steps` (objectstore.gc.Collection.steps), each
    pack removal it asks for run, as a server runs them between its own work; False once
    the collection is over."""
    for _ in range(count):
        removal = next(steps, steps)   # (the generator itself: a value no step yields)
        if removal is steps:
            return False
        if removal is not None:
            removal.run()
    return True
