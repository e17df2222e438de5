"""A TCP connection checkpointed and made again many times (tcp_repair.py), as a group
restored after crash after crash is: it keeps full-size segments, its buffers do not grow
from round to round, every byte arrives once and in order; the ends a killed original
left closing in the kernel do not keep a restore from taking the connection's addresses;
and an end whose other end could not be made again comes back reset, not hung."""
from __future__ import annotations

import array
import errno
import socket
import struct
import sys
from pathlib import Path

import pytest

import checkpointer
from checkpointer import tcp_repair
from ckpt_helpers import children_of, state_of, wait_for

TARGET = Path(__file__).parent / "targets" / "tcp_stream.py"
DEFAULT_MSS = 536       # what a connection made in repair mode had sized its segments from


class Blobs:
    """An in-memory stand-in for the store's blobs."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def put(self, data: bytes) -> list[str]:
        key = str(len(self.data))
        self.data[key] = data
        return [key]

    def read(self, ids: list[str]) -> bytes:
        return b"".join(self.data[i] for i in ids)


def connected_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        writer = socket.create_connection(listener.getsockname())
        reader, _ = listener.accept()
    return writer, reader


class Stream:
    """Consecutive 8-byte counters, written as far as a connection takes them and checked
    on the other side."""

    def __init__(self, counters: int = 8 << 20):
        self.data = array.array("Q", range(1, counters + 1)).tobytes()
        self.written = 0
        self.pending, self.expected = b"", 1

    def fill(self, writer: socket.socket) -> None:
        writer.setblocking(False)
        try:
            while self.written < len(self.data):
                self.written += writer.send(self.data[self.written:self.written + (1 << 20)])
        except BlockingIOError:
            pass
        finally:
            writer.setblocking(True)
        assert self.written < len(self.data), "the connection took 64 MiB: its buffers grew"

    def check(self, received: bytes) -> None:
        self.pending += received
        whole = len(self.pending) // 8 * 8
        for (value,) in struct.iter_unpack("<Q", self.pending[:whole]):
            assert value == self.expected, f"read {value}, expected {self.expected}"
            self.expected += 1
        self.pending = self.pending[whole:]


def capture_pair(pair, blobs: Blobs) -> tuple[dict, dict]:
    """Both ends' states (failing with why when the pair could not be read consistently)."""
    [states] = tcp_repair.capture([pair], blobs.put)
    assert not isinstance(states, str), states
    return states


def checkpoint_and_rebuild(pair, blobs: Blobs) -> tuple[socket.socket, socket.socket]:
    """Capture the pair, drop it silently (closed in repair mode: no FIN, no reset), make it
    again from the captured state, as a restore does (rebuild, load_sent, finish)."""
    first, second = capture_pair(pair, blobs)
    addresses = [(s.getsockname(), s.getpeername()) for s in pair]
    for sock in pair:
        sock.setsockopt(socket.IPPROTO_TCP, tcp_repair.TCP_REPAIR, tcp_repair.REPAIR_ON)
        sock.close()
    made = []
    for state, (local, peer) in zip((first, second), addresses):
        sock = socket.socket()
        tcp_repair.rebuild(sock, state, local, peer, blobs.read)
        made.append(sock)
    for sock, state in zip(made, (first, second)):     # every end made: what each had sent
        tcp_repair.load_sent(sock, state, blobs.read)
    for sock, state in zip(made, (first, second)):
        tcp_repair.finish(sock, state, 0, blobs.read)
    return made[0], made[1]


def snd_mss(sock: socket.socket) -> int:
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 16)[0]


def test_a_connection_made_again_round_after_round_stays_whole_and_does_not_grow():
    blobs, stream = Blobs(), Stream()
    writer, reader = connected_pair()
    sizes = []
    try:
        for _ in range(6):
            stream.fill(writer)
            writer, reader = checkpoint_and_rebuild((writer, reader), blobs)
            sizes.append(writer.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
            assert snd_mss(writer) > DEFAULT_MSS, "a repaired connection must not fall back to 536-byte segments"
            reader.settimeout(30)
            stream.check(reader.recv(1 << 20))      # some bytes move between two checkpoints
        writer.shutdown(socket.SHUT_WR)
        reader.settimeout(30)
        while chunk := reader.recv(1 << 20):
            stream.check(chunk)
        assert (stream.expected - 1) * 8 + len(stream.pending) == stream.written, "bytes were lost"
    finally:
        writer.close()
        reader.close()
    assert max(sizes) <= 2 * sizes[0], f"the send buffer grew at each round: {sizes}"


def test_the_closing_ends_a_killed_connection_left_do_not_hold_its_addresses():
    """A connection whose writer was closed with bytes its reader never took leaves an
    orphan (FIN_WAIT1, retransmitting); the reader's close leaves it TIME_WAIT or gone.
    A connection made again on the same address pair must get it; a socket a process
    holds is never destroyed."""
    blobs = Blobs()
    writer, reader = connected_pair()
    Stream().fill(writer)
    writer_state, reader_state = capture_pair((writer, reader), blobs)
    pairs = [(writer.getsockname(), writer.getpeername()), (reader.getsockname(), reader.getpeername())]
    held_writer, held_reader = connected_pair()
    held = [(held_writer.getsockname(), held_writer.getpeername())]
    writer.close()                      # an orphan: bytes unsent, the peer's window closed
    try:
        assert tcp_repair.clear_leftovers(held) == 0
        with socket.socket() as blocked:
            with pytest.raises(OSError) as refused:
                tcp_repair.rebuild(blocked, writer_state, *pairs[0], blobs.read)
            assert refused.value.errno == errno.EADDRNOTAVAIL
        assert tcp_repair.clear_leftovers(pairs) >= 1
        reader.setsockopt(socket.IPPROTO_TCP, tcp_repair.TCP_REPAIR, tcp_repair.REPAIR_ON)
        reader.close()
        made = [socket.socket(), socket.socket()]
        try:
            for sock, state, (local, peer) in zip(made, (writer_state, reader_state), pairs):
                tcp_repair.rebuild(sock, state, local, peer, blobs.read)
        finally:
            for sock in made:
                sock.close()
        held_writer.sendall(b"still here")
        held_reader.settimeout(10)
        assert held_reader.recv(100) == b"still here"
    finally:
        for sock in (writer, reader, held_writer, held_reader):
            sock.close()


def test_an_end_whose_other_end_cannot_be_made_again_comes_back_reset(procs, store, tmp_path, subreaper):
    """When the child's end of tcp_stream's connection cannot be made again (a socket some
    process holds has its address pair), the parent's end, made in repair mode, must be
    reset with a warning, not left waiting for ever for a peer that does not exist: the
    restored parent then exits (on a BAD line, or the exception of its sendall)."""
    out = tmp_path / "tcp.out"
    proc = procs.start([sys.executable, str(TARGET), str(out)])
    children = []
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 1000, "the stream to flow")
        children = children_of(proc.pid)
        checkpointer.checkpoint([proc.pid], store, "tcp", tree=True)
    finally:
        procs.kill(proc)
        subreaper(children)
    image = checkpointer.load_image(store, "tcp")
    parent_files = {fd["file"] for fd in image.meta["processes"][0]["fds"]}
    child_end = next(f for f in image.meta["files"] if f.get("tcp") and f["id"] not in parent_files)
    with socket.socket() as squatter:       # holds the child's address pair, established, no handshake
        squatter.setsockopt(socket.IPPROTO_TCP, tcp_repair.TCP_REPAIR, tcp_repair.REPAIR_ON)
        tcp_repair.clear_leftovers([(tuple(child_end["address"]), tuple(child_end["peer"]))])
        squatter.bind(tuple(child_end["address"]))
        squatter.connect(tuple(child_end["peer"]))
        restored = checkpointer.restore(store, "tcp")
        procs.restored.append(restored)
        assert [w for w in restored.warnings if "could not be made again" in w], restored.warnings
        assert [w for w in restored.warnings if "restored reset" in w], restored.warnings
        wait_for(lambda: not running(restored.pids[0]), "the parent to see its connection reset and exit")


def running(pid: int) -> bool:
    try:
        return state_of(pid) not in ("Z", "X")
    except OSError:
        return False
