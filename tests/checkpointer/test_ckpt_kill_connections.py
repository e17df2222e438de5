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
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

import checkpointer
from checkpointer import sockets, tcp_hold, tcp_repair
from ckpt_helpers import wait_for

TARGET = Path(__file__).parent / "targets" / "counting_client.py"
HALF_CLOSED = Path(__file__).parent / "targets" / "half_closed_client.py"


@contextmanager
def client_of_ours(procs, *options: str) -> Iterator[tuple[socket.socket, int]]:
    """(our end of the connection, the client's pid), three lines exchanged already and
    every byte acknowledged both ways: nothing of ours is due to reach the client while it
    is dead (a delayed ACK would be answered with a reset: there is no network lock).
    `options`: counting_client.py's after the port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proc = procs.start([sys.executable, str(TARGET), str(listener.getsockname()[1]), *options])
        listener.settimeout(30)
        ours, _ = listener.accept()
    with ours:
        ours.settimeout(30)
        for n in range(1, 4):
            assert exchange(ours, b"line%d" % n) == b"line%d %d" % (n, n)
        wait_acknowledged(ours, proc.pid)
        yield ours, proc.pid


def wait_acknowledged(ours: socket.socket, pid: int) -> None:
    """Until every byte (and FIN) sent on the connection, both ways, is acknowledged."""
    fd = next(int(fd) for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
    with sockets.borrow(pid, fd) as theirs:
        wait_for(lambda: not _unacknowledged(theirs) and not _unacknowledged(ours), "every byte to be acknowledged")


def _unacknowledged(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), tcp_repair.SIOCOUTQ, b"\0" * 4))[0]


def _state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def killed(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


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
        wait_for(lambda: killed(pid), "the client to be killed")
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


def test_bytes_the_server_sends_while_the_client_is_dead_reach_it_after_the_restore(procs, store):
    """The killed client's connection is held (tcp_hold.py) until the restore takes it:
    a line sent meanwhile is acknowledged and kept, not answered with a reset, and the
    restored client reads it; no other user can take it from the holder, which lets it go
    once the restore took it."""
    with client_of_ours(procs) as (ours, pid):
        checkpointer.checkpoint([pid], store, "client", tree=True, kill=True)
        wait_for(lambda: killed(pid), "the client to be killed")
        ours.sendall(b"line4\n")
        wait_for(lambda: not _unacknowledged(ours) or _state(ours) == tcp_repair.TCP_CLOSE, "an answer to the line")
        assert _state(ours) == tcp_repair.TCP_ESTABLISHED, "the line was answered with a reset"
        [record] = [f for f in checkpointer.load_image(store, "client").meta["files"]
                    if f["kind"] == "socket" and f["peer"]]
        assert stranger_takes(record) == "nothing", "another user got the held connection"
        restored = checkpointer.restore(store, "client")
        procs.restored.append(restored)
        assert exchange(ours, None) == b"line4 4"
        assert exchange(ours, b"line5") == b"line5 5"
        assert not held(record), "the holder still offers the connection the restore took"


def stranger_takes(record: dict) -> str:
    """What a process of another uid (nobody; the system Python: it may not reach the venv)
    gets asking the holder for `record`'s socket."""
    ask = ("import sys, socket\nwith socket.socket(socket.AF_UNIX) as s:\n    s.connect(bytes.fromhex(sys.argv[1]))\n"
           "    s.settimeout(10)\n    _, fds, _, _ = socket.recv_fds(s, 16, 1)\nprint('a socket' if fds else 'nothing')")
    done = subprocess.run(["/usr/bin/python3", "-I", "-c", ask, tcp_hold.name(record).hex()], user=65534,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def held(record: dict) -> bool:
    """Whether a holder (tcp_hold.py) offers the socket of connection `record` (if it
    does, this probe takes it, and closes it)."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(tcp_hold.name(record))
        except ConnectionRefusedError:
            return False
    return True


@pytest.fixture(autouse=True)
def no_holder_left(store):
    """After a test (one that failed before its restore, say): the holders of its image's
    connections are emptied (their sockets taken and closed), so none waits an hour."""
    yield
    if "img/client" in store.roots():
        for record in checkpointer.load_image(store, "client").meta["files"]:
            if record.get("tcp") and (sock := tcp_hold.take(record)) is not None:
                sock.close()


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


def test_a_client_that_had_closed_its_side_with_bytes_queued_sends_them_and_its_end_after_a_restore(
        procs, store, tmp_path):
    """FIN_WAIT1 (the client's FIN queued behind bytes the server has not read): the
    restored connection delivers every byte, then the end, and still carries the server's
    lines to the client."""
    out = tmp_path / "client.out"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proc = procs.start([sys.executable, str(HALF_CLOSED), str(listener.getsockname()[1]), str(out)])
        listener.settimeout(30)
        ours, _ = listener.accept()
    with ours:
        ours.settimeout(30)
        wait_for(lambda: out.exists() and out.read_text().startswith("sent"), "the client to fill the connection")
        sent = int(out.read_text().split()[1])
        checkpointer.checkpoint([proc.pid], store, "client", tree=True, kill=True)
        wait_for(lambda: killed(proc.pid), "the client to be killed")
        [record] = [f for f in checkpointer.load_image(store, "client").meta["files"]
                    if f["kind"] == "socket" and f["peer"]]
        assert record["state"] == "established" and record["tcp"]["fin"], record
        restored = checkpointer.restore(store, "client")
        procs.restored.append(restored)
        received = bytearray()
        while piece := ours.recv(1 << 16):
            received += piece
        assert len(received) == sent and received == bytes(i % 251 for i in range(sent))
        ours.sendall(b"line1\n")
        wait_for(lambda: "line1 1" in out.read_text(), "the client to read after the restore")
        ours.shutdown(socket.SHUT_WR)
        wait_for(lambda: out.read_text().endswith("EOF\n"), "the client to read the end")


def test_a_client_whose_server_had_closed_its_side_reads_the_end_again_after_a_restore(procs, store, tmp_path):
    """CLOSE_WAIT (the server's FIN received and read): the restored connection is told of
    that FIN again (forged in the server's name: the server will not send it twice), so
    the client reads EOF again instead of waiting for ever, and can still send."""
    out = tmp_path / "client.out"
    with client_of_ours(procs, str(out)) as (ours, pid):
        ours.shutdown(socket.SHUT_WR)
        wait_for(lambda: out.exists() and out.read_text() == "EOF\n", "the client to read the end")
        wait_acknowledged(ours, pid)
        checkpointer.checkpoint([pid], store, "client", tree=True, kill=True)
        wait_for(lambda: killed(pid), "the client to be killed")
        [record] = [f for f in checkpointer.load_image(store, "client").meta["files"]
                    if f["kind"] == "socket" and f["peer"]]
        assert record["state"] == "established" and record["tcp"]["peer_fin"], record
        restored = checkpointer.restore(store, "client")
        procs.restored.append(restored)
        Path(f"{out}.go").touch()
        assert exchange(ours, None) == b"bye 3 eof"
        assert ours.recv(1) == b""      # and the client's own end, as it exits


def test_a_connection_no_restore_took_within_its_hold_time_is_reset_and_a_later_restore_says_so(procs, store):
    """`hold_s` (`sls checkpoint --kill --hold SECONDS`): a killed client's connection
    that no restore took in time is reset, so the server learns that it is gone instead of
    waiting for ever; a restore after that makes it from the image, warns, and the
    restored client finds it reset (and ends, as it does on a reset) instead of waiting."""
    with client_of_ours(procs) as (ours, pid):
        checkpointer.checkpoint([pid], store, "client", tree=True, kill=True, hold_s=1)
        wait_for(lambda: killed(pid), "the client to be killed")
        [record] = [f for f in checkpointer.load_image(store, "client").meta["files"]
                    if f["kind"] == "socket" and f["peer"]]
        with pytest.raises(ConnectionResetError):
            ours.recv(1)
        assert not held(record)
        restored = checkpointer.restore(store, "client")
        procs.restored.append(restored)
        assert [w for w in restored.warnings if "no holder has it any more" in w], restored.warnings
        assert restored.wait(timeout=30) != 0
