"""Shortcuts the capture takes to keep the stop short give the records a full read gives:
epoll watches of sockets (checkpointer/files.py) name the fd that holds the watched socket;
connections remembered are recorded as a first capture records them."""
from __future__ import annotations

import socket
import sys

from checkpointer import files, freeze
from checkpointer.files import FileCapture
from ckpt_helpers import wait_for

# An epoll watching socket A through fd `moved` (added as fd `added`, since dup'ed and
# closed, and the number `added` reused by socket B, watched too), and socket C (added as is).
EPOLL_SOCKETS = r"""
import os, select, socket, sys, time
ep = select.epoll()
a, b, c = socket.socketpair(), socket.socketpair(), socket.socketpair()
added = a[0].fileno()
ep.register(added, select.EPOLLIN)
moved = os.dup2(added, 700)
a[0].detach(); os.close(added)
reused = os.dup2(b[0].fileno(), added)     # `added` now holds socket B
ep.register(reused, select.EPOLLOUT)
ep.register(c[0].fileno(), select.EPOLLIN)
open(sys.argv[1], "w").write(f"{ep.fileno()} {added} {moved} {c[0].fileno()}")
time.sleep(3600)
"""


def test_an_epoll_watch_of_a_socket_moved_to_another_fd_names_the_fd_holding_it(procs, tmp_path):
    out = tmp_path / "fds"
    proc = procs.start([sys.executable, "-c", EPOLL_SOCKETS, str(out)])
    epfd, added, moved, other = map(int, wait_for(lambda: out.exists() and out.read_text(), "the target").split())
    with freeze([proc.pid]):
        files = FileCapture(lambda data: [])
        records = files.fd_records(proc.pid)
    epoll = files.files[next(r["file"] for r in records if r["fd"] == epfd)]
    # (tfd, events we asked for, the fd holding the file when not tfd)
    watches = sorted((w[0], w[1] & 0x7, *w[3:]) for w in epoll["watches"])
    # socket A: added as `added`, held by `moved` now; socket B under `added` since; C as added
    assert watches == sorted([(added, 1, moved), (added, 4), (other, 1)]), watches


# An epoll watching socket A as fd `added`; once `go` exists, fd `added` is dup'ed to 700 and
# closed: the watch's fdinfo line reads the same, but fd `added` no longer holds socket A.
EPOLL_SOCKET_MOVES = r"""
import os, select, socket, sys, time
ep = select.epoll()
a = socket.socketpair()
added = a[0].fileno()
ep.register(added, select.EPOLLIN)
open(sys.argv[1], "w").write(f"{ep.fileno()} {added}")
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
os.dup2(added, 700)
a[0].detach(); os.close(added)
open(sys.argv[3], "w").write("moved")
time.sleep(3600)
"""


def test_an_epoll_watch_read_again_the_same_names_the_fd_holding_its_socket_now(procs, tmp_path):
    """The watches of an epoll's fdinfo lines seen before are remembered by the lines' text
    (files._watch_lines): a socket moved to another fd since leaves its line as it was, and
    the next capture must still find the fd that holds it now."""
    out, go, moved = tmp_path / "fds", tmp_path / "go", tmp_path / "moved"
    proc = procs.start([sys.executable, "-c", EPOLL_SOCKET_MOVES, str(out), str(go), str(moved)])
    epfd, added = map(int, wait_for(lambda: out.exists() and out.read_text(), "the target").split())

    def watches() -> list[tuple]:
        with freeze([proc.pid]):
            files = FileCapture(lambda data: [])
            records = files.fd_records(proc.pid)
        epoll = files.files[next(r["file"] for r in records if r["fd"] == epfd)]
        return [(w[0], w[1] & 0x7, *w[3:]) for w in epoll["watches"]]
    assert watches() == [(added, 1)]
    go.touch()
    wait_for(lambda: moved.exists(), "the socket to move")
    assert watches() == [(added, 1, 700)]


# Three connections to a server outside the image (they come back closed: their records are
# remembered, files._connections), one of them dup'ed to fd 600 and one O_ASYNC; once `go`
# exists, fd 600 is closed and a fourth connection made.
CLIENTS = r"""
import fcntl, os, socket, sys, time
port = int(sys.argv[1])
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
os.dup2(conns[0].fileno(), 600)
fcntl.fcntl(conns[2].fileno(), fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(conns[2].fileno(), fcntl.F_SETFL, fcntl.fcntl(conns[2].fileno(), fcntl.F_GETFL) | os.O_ASYNC)
open(sys.argv[2], "w").write(" ".join(str(c.fileno()) for c in conns))
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
os.close(600)
conns.append(socket.create_connection(("127.0.0.1", port)))
open(sys.argv[4], "w").write(str(conns[3].fileno()))
time.sleep(3600)
"""


def test_remembered_connections_give_the_records_a_first_capture_gives(procs, tmp_path):
    """A connection seen before is recorded from what was remembered of it
    (FileCapture._connection_fd_record): the fd and file records must be those a capture
    that remembers nothing makes, a socket held by two fds one file, an O_ASYNC one with
    its owner; and so after fds closed and opened."""
    server = socket.create_server(("127.0.0.1", 0))
    ready, go, more = tmp_path / "ready", tmp_path / "go", tmp_path / "more"
    proc = procs.start([sys.executable, "-c", CLIENTS, str(server.getsockname()[1]), str(ready), str(go), str(more)])
    try:
        fds = [int(fd) for fd in wait_for(lambda: ready.exists() and ready.read_text(), "the clients").split()]

        def capture(forget: bool) -> tuple[list[dict], list[dict]]:
            if forget:
                files._connections.clear(), files._connection_fdinfo.clear(), files._connection_inos.clear()
            with freeze([proc.pid]):
                capture = FileCapture(lambda data: [])
                return capture.fd_records(proc.pid), capture.files
        first = capture(forget=True)
        records, opened = first
        by_fd = {r["fd"]: opened[r["file"]] for r in records}
        assert by_fd[600] is by_fd[fds[0]] and by_fd[fds[0]]["kind"] == "socket"
        assert by_fd[fds[2]]["fown"][1] > 0 and by_fd[fds[2]]["flags"] & 0o20000, by_fd[fds[2]]
        assert capture(forget=False) == first == capture(forget=False)
        go.touch()
        wait_for(lambda: more.exists(), "the fourth connection")
        again = capture(forget=False)
        assert 600 not in {r["fd"] for r in again[0]}
        assert again == capture(forget=False) == capture(forget=True)
    finally:
        server.close()
