"""Shared fixtures for the object store tests (helpers live in objectstore_helpers.py)."""
from __future__ import annotations

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
