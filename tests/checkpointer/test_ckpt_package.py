"""The checkpointer package's own names (checkpointer/__init__.py), which import the
capture side lazily."""
from __future__ import annotations

import subprocess
import sys

LATE_SUBMODULE = """
import sys
import checkpointer
assert "checkpointer.capture" not in sys.modules and "checkpointer.incremental" not in sys.modules, "imported early"
import checkpointer.treecapture                  # imports the submodule checkpointer.capture
from checkpointer import capture, Incremental, FileCapture
assert capture is checkpointer.capture and capture.__module__ == "checkpointer", capture
from checkpointer.incremental import Incremental as incremental
assert Incremental is incremental, Incremental
print("ok")
"""


def test_the_capture_function_keeps_its_name_after_its_submodule_is_imported():
    """`checkpointer.capture` is the package's function also when the submodule
    capture.py is imported after the package (the import system sets the package's
    attribute of that name to the submodule), and the lazily imported names are there."""
    result = subprocess.run([sys.executable, "-c", LATE_SUBMODULE], capture_output=True, text=True, timeout=60)
    assert result.stdout == "ok\n", result.stderr
