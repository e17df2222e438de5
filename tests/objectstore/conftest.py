"""Shared fixtures and helpers for the object store tests."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from objectstore import Store


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A path where a new store may be created (it does not exist yet)."""
    return tmp_path / "store"


@pytest.fixture
def store(store_dir: Path) -> Iterator[Store]:
    s = Store.init(store_dir)
    try:
        yield s
    finally:
        s.close()


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
