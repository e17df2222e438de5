"""Fixtures for the file-system tests: real stores, real background mounts via `sls`.

Every mount is torn down even when a test fails: lazy unmount, then the daemon is
killed by its pid if it did not exit, then the temporary directories go.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mount_helpers import Mount, sls
from mount.filesystem import ensure_volume
from objectstore import Store
from tmpfs import tmpfs


@pytest.fixture
def workdir(short_tmp):
    """A directory of short paths that other users may enter, under the session's short_tmp
    (which the suite's leftover-mount safety net covers)."""
    path = Path(tempfile.mkdtemp(dir=short_tmp))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def small_disk(workdir):
    """A 48 MiB tmpfs to put a store on (full-disk tests); unmounted at the end."""
    with tmpfs(workdir / "small", "48m") as root:
        yield root


@pytest.fixture
def store(tmp_path):
    """A new store holding an empty volume "main" (for tests of the inode layer without FUSE)."""
    store = Store.init(tmp_path / "store")
    ensure_volume(store, "main")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def new_mount(workdir):
    """A factory: new_mount(*extra sls-mount args) -> a live Mount on a fresh store."""
    mounts: list[Mount] = []

    def make(*extra: str, root: Path | None = None) -> Mount:
        m = Mount(root or workdir / f"m{len(mounts)}", extra)
        m.root.mkdir(exist_ok=True)
        mounts.append(m)
        sls("init", m.store)
        m.mount()
        return m

    try:
        yield make
    finally:
        for m in mounts:
            m.cleanup()


@pytest.fixture
def mnt(new_mount) -> Mount:
    return new_mount()
