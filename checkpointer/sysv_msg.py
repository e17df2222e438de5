"""SysV message queues (msgget/msgsnd/msgrcv) are not checkpointed: refused by name.

A queue lives in the IPC namespace, not in any process: a crash leaves it with the
messages sent after the checkpoint (and a reboot removes it), so a restored process
would read messages that do not match its memory (stress-ng --msg: "expected msg
containing N but received M"). What is seen of a queue's users is the last sender and
the last receiver (/proc/sysvipc/msg lspid, lrpid): a queue one of the frozen processes
sent to or received from last is refused at checkpoint time, naming it.

Simplification: a queue whose last sender and receiver are other processes goes
unnoticed (only those two PIDs are recorded by the kernel).
"""
from __future__ import annotations

from typing import Iterable

from .errors import Unsupported


def refuse_used(pids: Iterable[int]) -> None:
    """Raise Unsupported if one of `pids` (host PIDs) last sent to or received from a
    SysV message queue."""
    pids = set(pids)
    try:
        with open("/proc/sysvipc/msg") as f:
            lines = f.readlines()[1:]
    except FileNotFoundError:                 # a kernel without SysV IPC
        return
    for line in lines:
        key, msqid, _perms, _cbytes, qnum, lspid, lrpid = line.split()[:7]
        user = next((pid for pid in (int(lspid), int(lrpid)) if pid in pids), None)
        if user is not None:
            raise Unsupported(f"process {user} uses the SysV message queue {msqid} (key {int(key):#x}, "
                              f"{qnum} messages queued): slsfs does not checkpoint message queues (after "
                              "a restore its messages would not match the process's memory); use a pipe "
                              "or a Unix socket instead")
