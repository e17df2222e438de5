"""Errors of the checkpointer, each with a message that says what to do.

CheckpointError is the base; ProcessGone means a process vanished (exited or was
killed) while it was being frozen or captured, so no image was written; Unsupported
names a piece of process state the checkpointer cannot capture or restore.
"""
from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint or restore failed; the message is meant for the user."""


class ProcessGone(CheckpointError):
    def __init__(self, pid: int, detail: str = ""):
        self.pid = pid
        super().__init__(
            f"process {pid} exited or was killed during the checkpoint{': ' + detail if detail else ''}; "
            "no image was written (check that the process is running and try again)"
        )


class Unsupported(CheckpointError):
    """State that cannot be checkpointed (or restored) faithfully: never silently dropped."""
