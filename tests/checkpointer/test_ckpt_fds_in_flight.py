"""File descriptors in flight over Unix sockets (SCM_RIGHTS): sent and not yet received at
the checkpoint. After a restore the receiver gets the same messages, with the same
boundaries, each with working fds of the same kind (a pipe end that carries what the
sender writes now, a file at its offset sharing its description with a dup the sender
kept, an eventfd with its count, a socket with its own fds queued). Before image version
10 a datagram carrying fds was refused, and in a stream the fds (and every byte after
the first message carrying them) were silently lost."""
from __future__ import annotations

import os

import pytest

import checkpointer
from checkpointer import load_image

from ckpt_helpers import children_of, ok_lines, reads_after_a_restore, wait_for


@pytest.mark.parametrize("case", ["pipe", "file", "dgram", "nested", "sequence", "tcp", "creds", "tree", "server", "embryo", "syslog"])
def test_fds_in_flight_are_received_after_a_restore(procs, store, tmp_path, subreaper, case):
    out = tmp_path / f"{case}.out"
    proc = procs.python("fds_in_flight.py", str(out), str(tmp_path), case)
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to send its fds")
    children = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, case, tree=True)
    procs.kill(proc)
    subreaper(children)
    restored = reads_after_a_restore(procs, store, case, out)
    if case == "server":    # their senders' names come back (they were lost, with this warning)
        assert not [w for w in restored.warnings if "sender's address" in w], restored.warnings
    if case in ("embryo", "syslog"):
        return
    image = load_image(store, case)
    passed = [ids for f in image.files if f["kind"] in ("unix_pair", "socket") for *_, ids in f.get("rights", [])]
    assert passed, "the image records no fd in flight"


@pytest.mark.parametrize("case, named", [("talker", r"socket:\[\d+\] waits for the listener .*listener.sock"),
                                         ("closed", r"were closed by their clients")])
def test_a_connection_not_accepted_yet_holding_bytes_is_refused_by_name(procs, store, tmp_path, case, named):
    """A Unix connection waiting in a listener's accept queue whose client sent bytes into it
    (zdtm sk-unix-listen02; 03 and 04 with the client closed): those bytes cannot be read
    without accepting it, and a restore without them leaves the server never to see them
    (it waited in accept() forever): refused at checkpoint, naming it."""
    out = tmp_path / f"{case}.out"
    proc = procs.python("fds_in_flight.py", str(out), str(tmp_path), case)
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 2, "the target to connect")
    with pytest.raises(checkpointer.Unsupported, match=named):
        checkpointer.checkpoint([proc.pid], store, case)
    os.kill(proc.pid, 0)            # left running


def test_a_socket_in_flight_over_itself_is_refused_by_name(procs, store, tmp_path):
    """A socket waiting in its own receive queue (the cycle the kernel's garbage collector
    hunts) cannot be sent again by a restore: refused, naming it, not lost."""
    out = tmp_path / "self.out"
    proc = procs.python("fds_in_flight.py", str(out), str(tmp_path), "self")
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 2, "the target to send its socket")
    ours = len(os.listdir("/proc/self/fd"))
    with pytest.raises(checkpointer.Unsupported, match=r"socket sent over itself"):
        checkpointer.checkpoint([proc.pid], store, "self")
    assert len(os.listdir("/proc/self/fd")) == ours, "copies of the fds in flight were left open in the checkpointer"
