"""`checkpoint(..., kill=True)` (`sls checkpoint PID --kill`, CRIU's dump): the processes
are killed once the image is durable, and their TCP connections to a peer outside the
image end silently (held in repair mode: no FIN, no reset), so that the peer, which runs
on, sees nothing and a restore resumes the connection where it was. Here the test is the
peer: a server whose client (targets/counting_client.py) is checkpointed and killed."""
from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

import checkpointer
from checkpointer import sockets, tcp_repair
from ckpt_helpers import wait_for

TARGET = Path(__file__).parent / "targets" / "counting_client.py"


@contextmanager
def client_of_ours(procs) -> Iterator[tuple[socket.socket, int]]:
    """(our end of the connection, the client's pid), three lines exchanged already and
    every byte acknowledged both ways: nothing of ours is due to reach the client while it
    is dead (a delayed ACK would be answered with a reset: there is no network lock)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proc = procs.start([sys.executable, str(TARGET), str(listener.getsockname()[1])])
        listener.settimeout(30)
        ours, _ = listener.accept()
    with ours:
        ours.settimeout(30)
        for n in range(1, 4):
            assert exchange(ours, b"line%d" % n) == b"line%d %d" % (n, n)
        fd = next(int(fd) for fd in os.listdir(f"/proc/{proc.pid}/fd")
                  if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("socket:"))
        with sockets.borrow(proc.pid, fd) as theirs:
            wait_for(lambda: not _unacknowledged(theirs), "the client's answer to be acknowledged")
        yield ours, proc.pid


def _unacknowledged(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), tcp_repair.SIOCOUTQ, b"\0" * 4))[0]


def exchange(sock: socket.socket, line: bytes | None) -> bytes:
    """Send a line (None: none), read one answer line."""
    if line is not None:
        sock.sendall(line + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        piece = sock.recv(1)
        assert piece, f"the connection ended (answer so far {answer!r})"
        answer += piece
    return answer.rstrip(b"\n")


def test_a_killed_client_is_resumed_on_the_same_connection_and_its_server_sees_no_close(procs, store):
    with client_of_ours(procs) as (ours, pid):
        checkpointer.checkpoint([pid], store, "client", tree=True, kill=True)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
                 "the client to be killed")
        ours.setblocking(False)
        with pytest.raises(BlockingIOError):    # no EOF, no reset: the close was silent
            ours.recv(1)
        ours.settimeout(30)
        [record] = [f for f in checkpointer.load_image(store, "client").meta["files"]
                    if f["kind"] == "socket" and f["peer"]]
        assert record["state"] == "established" and record["peer"] == list(ours.getsockname()), record
        restored = checkpointer.restore(store, "client")
        procs.restored.append(restored)
        assert not [w for w in restored.warnings if "connection" in w], restored.warnings
        for n in range(4, 8):       # the same connection; the counter from the image's memory
            assert exchange(ours, b"line%d" % n) == b"line%d %d" % (n, n)


def test_bytes_arriving_after_the_state_was_read_leave_the_processes_running(procs, store, monkeypatch):
    """Bytes the peer sends after the connection's state was read (acknowledged by the
    kernel, not in the image) would be lost to a restore: the kill is called off, the
    error says why, and the connection leaves repair mode working."""
    with client_of_ours(procs) as (ours, pid):
        hold = tcp_repair.hold

        def hold_then_send(sock, put_blob):
            state = hold(sock, put_blob)
            ours.sendall(b"late\n")
            wait_for(lambda: tcp_repair.moved(sock, state), "the late line to arrive")
            return state
        monkeypatch.setattr(tcp_repair, "hold", hold_then_send)
        with pytest.raises(checkpointer.CheckpointError, match="received bytes after their state was read"):
            checkpointer.checkpoint([pid], store, "client", tree=True, kill=True)
        assert Path(f"/proc/{pid}/stat").read_text().split()[2] in "RS"
        assert exchange(ours, None) == b"late 4"     # the late line, answered once let go
        assert exchange(ours, b"line5") == b"line5 5"
