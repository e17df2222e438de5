"""TCP connections whose two ends are in the image come back as they were (TCP_REPAIR,
checkpointer/tcp_repair.py): the same sequence numbers, the bytes queued each way, no
reset; a connection to a peer outside the image still comes back closed."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import checkpointer
from ckpt_helpers import children_of, wait_for

TARGET = Path(__file__).parent / "targets" / "tcp_stream.py"


def progress(out: Path, pid: int | None = None) -> int:
    """The highest counter the target's parent (the process of host PID `pid`, running:
    any by default) has read in order; fails on its BAD line."""
    lines = [line.split() for line in (out.read_text() if out.exists() else "").splitlines()]
    lines = [line for line in lines if pid is None or line[0] == _started(pid)]
    assert not [line for line in lines if line[1] == "BAD"], lines[-3:]
    return int(lines[-1][1]) if lines else 0


def _started(pid: int) -> str:
    """How tcp_stream.py names the process `pid` in its lines: its start time."""
    return "t" + Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


@contextmanager
def streaming(procs, tmp_path, subreaper, flowed: int) -> Iterator[tuple[Path, int]]:
    """(output, pid) of the target, started and its stream past `flowed` bytes; killed with
    its children afterwards."""
    out = tmp_path / "tcp.out"
    proc = procs.start([sys.executable, str(TARGET), str(out)])
    children = []
    try:
        wait_for(lambda: progress(out, proc.pid) > flowed, "the stream to flow")
        children = children_of(proc.pid)
        yield out, proc.pid
    finally:
        procs.kill(proc)
        subreaper(children)


def stream_connections(store) -> list[dict]:
    """The records of the image's connected stream sockets."""
    return [f for f in checkpointer.load_image(store, "tcp").meta["files"]
            if f["kind"] == "socket" and f["type"] == "stream" and f["peer"]]


def test_a_loopback_connection_inside_the_image_carries_on_without_a_lost_byte(procs, store, tmp_path, subreaper):
    with streaming(procs, tmp_path, subreaper, 100_000) as (out, pid):
        for _ in range(10):     # a checkpoint reads the live connection without disturbing it
            before = progress(out)
            checkpointer.checkpoint([pid], store, "tcp", tree=True)
            wait_for(lambda: progress(out) > before + 1000, "the stream to flow after a checkpoint")
        checkpointer.checkpoint([pid], store, "tcp", tree=True)
    connections = stream_connections(store)
    assert sorted(f["state"] for f in connections) == ["established", "established"], connections
    assert any(f["tcp"]["recv_bytes"] for f in connections), "the test wants bytes queued at the checkpoint"
    at_checkpoint = progress(out)
    restored = checkpointer.restore(store, "tcp")
    procs.restored.append(restored)
    assert not [w for w in restored.warnings if "connection" in w], restored.warnings
    wait_for(lambda: progress(out) > at_checkpoint + 200_000, "the restored stream to flow on")
    assert progress(out) > at_checkpoint + 200_000


def test_a_connection_whose_ends_are_made_far_apart_in_a_slow_restore_carries_on(
        procs, store, tmp_path, subreaper, monkeypatch):
    """Under load a restore made the second end of a loopback connection 200-500 ms after
    the first; bytes the first had sent unacknowledged, put back in its send queue, armed
    its retransmission timer, and the retransmission, with no socket yet to take it, was
    answered by a reset ("could not be resumed: Connection reset by peer", ~1 restore in
    25 under load). Simulated: each end is made 0.5 s after the previous one."""
    from checkpointer import tcp_repair
    rebuild = tcp_repair.rebuild

    def slow_rebuild(*args, **kwargs):
        rebuild(*args, **kwargs)
        time.sleep(0.5)
    monkeypatch.setattr(tcp_repair, "rebuild", slow_rebuild)
    with streaming(procs, tmp_path, subreaper, 100_000) as (out, pid):
        for _ in range(50):     # until a checkpoint holds bytes sent and not yet acknowledged
            checkpointer.checkpoint([pid], store, "tcp", tree=True)
            if any(f["tcp"]["send_bytes"] > f["tcp"]["unsent"] for f in stream_connections(store)):
                break
    connections = stream_connections(store)
    assert [f["state"] for f in connections] == ["established", "established"]
    assert any(f["tcp"]["send_bytes"] > f["tcp"]["unsent"] for f in connections), "the test wants bytes in flight"
    at_checkpoint = progress(out)
    restored = checkpointer.restore(store, "tcp")
    procs.restored.append(restored)
    assert not [w for w in restored.warnings if "connection" in w], restored.warnings
    wait_for(lambda: progress(out) > at_checkpoint + 200_000, "the restored stream to flow on")


def test_a_copy_restored_beside_the_running_original_gets_its_connection_closed(procs, store, tmp_path, subreaper):
    """As `sls restore --clone` does: the original still holds the address pair, so the
    copy's connection comes back closed, with a warning, and the original's is not
    disturbed."""
    with streaming(procs, tmp_path, subreaper, 10_000) as (out, pid):
        checkpointer.checkpoint([pid], store, "tcp", tree=True)
        restored = checkpointer.restore_source(checkpointer.load_image(store, "tcp"), share_listening_ports=True)
        procs.restored.append(restored)
        assert len([w for w in restored.warnings if "could not be made again" in w]) == 2, restored.warnings
        at_restore = progress(out, pid)
        wait_for(lambda: progress(out, pid) > at_restore + 100_000, "the original's stream to flow on")


def test_a_connection_that_cannot_be_read_consistently_comes_back_closed_saying_why(
        procs, store, tmp_path, subreaper, monkeypatch):
    """Bytes that keep moving between the reads of a connection's two ends (segments still
    landing on a loaded machine; simulated here: the ends never agree) give up after a
    bounded number of reads (the application is frozen meanwhile), and the restore's
    warning says why the connection is closed, instead of "its peer cannot follow"."""
    from checkpointer import tcp_repair
    reads = []
    read = tcp_repair._read
    monkeypatch.setattr(tcp_repair, "_read", lambda sock: reads.append(sock) or read(sock))
    monkeypatch.setattr(tcp_repair, "_agree", lambda sender, receiver: False)
    with streaming(procs, tmp_path, subreaper, 10_000) as (_, pid):
        checkpointer.checkpoint([pid], store, "tcp", tree=True)
    assert 4 <= len(reads) <= 2 * tcp_repair.PAIR_READS, len(reads)
    connections = stream_connections(store)
    assert [f["state"] for f in connections] == ["closed", "closed"], connections
    restored = checkpointer.restore(store, "tcp")
    procs.restored.append(restored)
    closed = [w for w in restored.warnings if "restored closed" in w]
    assert len(closed) == 2 and all("still moving" in w for w in closed), restored.warnings
