"""A group checkpoint's image is written in the thread that serves the mount, a step at a
time: the application's file requests are answered between two steps, not only once the
whole image is written (slsfs.group_checkpoint.in_turns, ImageWriter.finishing).

The scenario (image_write_scenario.py, a child process) serves a real FUSE mount and, in
the same trio loop, writes an image whose finish is slowed down (each page block's
encoding takes a few milliseconds); while it runs, this test stats a name in the mount.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("image_write_scenario.py")


@pytest.fixture
def workdir(short_tmp):
    path = Path(tempfile.mkdtemp(dir=short_tmp))
    (path / "mnt").mkdir()
    try:
        yield path
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(path / "mnt")], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def _look_up(path: Path, done: list) -> None:
    try:
        os.stat(path)
    except FileNotFoundError:
        done.append("not found")


@pytest.mark.timeout(180)
def test_a_lookup_is_answered_while_the_image_finish_runs(workdir):
    scenario = subprocess.Popen([sys.executable, str(SCENARIO), str(workdir)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert scenario.stdout.readline() == "writing\n", scenario.stderr.read()
        done: list = []
        lookup = threading.Thread(target=_look_up, args=(workdir / "mnt" / "missing", done))
        lookup.start()
        lookup.join(timeout=120)
        assert done == ["not found"]
        scenario.stdin.write("answered\n")
        scenario.stdin.flush()
        out, err = scenario.communicate(timeout=120)
    finally:
        if scenario.poll() is None:
            scenario.kill()
            scenario.wait()
    assert scenario.returncode == 0, err
    results = json.loads(out)
    assert results["pages_read_back"] is True
    assert results["answered_at_block"] is not None, (
        f"the lookup was answered only after the image's {results['blocks']} blocks were written")
    assert results["answered_at_block"] < results["blocks"]
