"""Processes killed while frozen are let go: their parents can reap them (a dead tracee
stays reported to its tracer until the tracer waits for it)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from checkpointer import freeze

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
