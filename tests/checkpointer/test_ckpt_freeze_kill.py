"""Processes killed while frozen are let go: their parents can reap them (a dead tracee
stays reported to its tracer until the tracer waits for it); a capture sees them gone at once."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from checkpointer import freeze
from checkpointer.errors import ProcessGone

PARENT = """
import os, time
child = os.fork()
if child == 0:
    time.sleep(1000)
    os._exit(0)
print(child, flush=True)
os.waitpid(child, 0)
print("reaped", flush=True)
time.sleep(1000)
"""


def test_a_child_killed_while_frozen_is_reaped_by_its_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        with freeze([parent.pid], tree=True) as frozen:
            assert child in frozen.processes
            os.kill(child, signal.SIGKILL)
        # the parent's waitpid returns only once the tracer has let the dead child go
        assert select.select([parent.stdout], [], [], 30)[0], "the parent could not reap its child"
        assert parent.stdout.readline().strip() == "reaped"
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(f"/proc/{child}")
    finally:
        parent.kill()
        parent.wait()


def test_a_process_killed_while_frozen_is_found_gone_before_it_has_run_to_exit():
    """check_alive, the last step of a capture's stop, must see a SIGKILL that came during
    the stop at once: the killed process shares the tracer's CPU at the same real-time
    priority (freeze.py), so it has not run to become a zombie yet."""
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"], start_new_session=True)
    try:
        with pytest.raises(ProcessGone):
            with freeze([target.pid], tree=True) as frozen:
                frozen.check_alive()            # alive: nothing raised
                os.kill(target.pid, signal.SIGKILL)
                frozen.check_alive()
        target.wait(30)       # (reaped by the thaw already: the tracer is its parent here)
    finally:
        target.kill()
        target.wait()
