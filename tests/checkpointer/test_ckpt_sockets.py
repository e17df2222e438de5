"""Sockets other than socket pairs: a server listening on TCP (IPv4 and IPv6), UDP and a
named Unix socket, with a client connected, is checkpointed, killed and restored; new
clients are served on the same addresses with the server's in-memory state intact, and
the connections to the old clients (TCP and Unix) come back closed with a warning; a Unix
connection to a peer outside the image keeps what that peer had sent."""
from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

import checkpointer
from checkpointer import load_image

from ckpt_helpers import ok_lines, reads_after_a_restore, restored_goes_on, wait_for

O_NONBLOCK = 0o4000


def ask_stream(family: int, address, timeout: float = 30.0) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(address)
        client.sendall(b"hello\n")
        return client.recv(100).decode()


def ask_udp(port: int, timeout: float = 30.0) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(timeout)
        client.sendto(b"hello", ("127.0.0.1", port))
        return client.recv(100).decode()


def test_server_listening_on_tcp_udp_and_unix_is_served_again_after_restore(procs, store, tmp_path):
    out, path = tmp_path / "server.out", str(tmp_path / "server.sock")
    proc = procs.python("inet_server.py", str(out), path)
    ready = wait_for(lambda: out.exists() and ok_lines(out), "the server to listen")[0].split()
    tcp4, tcp6, udp = (int(port) for port in ready[1:])
    assert ask_stream(socket.AF_INET, ("127.0.0.1", tcp4)) == f"1 {proc.pid}\n"
    assert ask_udp(udp) == f"2 {proc.pid}\n"
    with socket.create_connection(("127.0.0.1", tcp4), timeout=30) as old_client, \
            socket.socket(socket.AF_UNIX) as old_unix_client:
        old_client.sendall(b"hi\n")
        assert old_client.recv(100).decode() == f"3 {proc.pid}\n"  # connected while checkpointed
        old_unix_client.settimeout(30)
        old_unix_client.connect(path)
        old_unix_client.sendall(b"hi\n")
        assert old_unix_client.recv(100).decode() == f"4 {proc.pid}\n"
        checkpointer.checkpoint([proc.pid], store, "server", tree=True)
        procs.kill(proc)
    sockets = [f for f in load_image(store, "server").files if f["kind"] == "socket"]
    by_state = sorted((f["family"], f["type"], f["state"]) for f in sockets)
    assert by_state == sorted([("inet", "dgram", "bound"), ("inet", "stream", "closed"), ("inet", "stream", "listen"),
                               ("unix", "stream", "listen")]
                              + [("inet6", "stream", "listen")] * bool(tcp6))
    [listen4] = [f for f in sockets if f["family"] == "inet" and f["state"] == "listen"]
    assert listen4["backlog"] == 7 and listen4["options"]["SO_REUSEADDR"] == 1 and listen4["flags"] & O_NONBLOCK
    assert [f["outside"] for f in load_image(store, "server").files if f["kind"] == "unix_pair"] == [1]
    for listen6 in [f for f in sockets if f["family"] == "inet6"]:
        assert listen6["options"]["IPV6_V6ONLY"] == 1 and listen6["address"][1] == tcp6

    restored = checkpointer.restore(store, "server")
    procs.restored.append(restored)
    assert any("restored closed" in w and f":{tcp4} ->" in w for w in restored.warnings), restored.warnings
    wait_for(lambda: "ended reset" in out.read_text() and "ended eof" in out.read_text(),
             "the server to see its old TCP connection reset and its old Unix one ended")
    assert ask_stream(socket.AF_INET, ("127.0.0.1", tcp4)) == f"5 {proc.pid}\n"
    assert ask_stream(socket.AF_UNIX, path) == f"6 {proc.pid}\n"
    assert ask_udp(udp) == f"7 {proc.pid}\n"
    if tcp6:  # IPv6 is there
        assert ask_stream(socket.AF_INET6, ("::1", tcp6)) == f"8 {proc.pid}\n"
    assert os.path.exists(path)


def test_restored_twice_the_second_restore_names_the_address_in_use(procs, store, tmp_path):
    out, path = tmp_path / "server.out", str(tmp_path / "server.sock")
    proc = procs.python("inet_server.py", str(out), path)
    tcp4 = int(wait_for(lambda: out.exists() and ok_lines(out), "the server to listen")[0].split()[1])
    checkpointer.checkpoint([proc.pid], store, "server", tree=True)
    procs.kill(proc)
    procs.restored.append(checkpointer.restore(store, "server"))
    assert ask_stream(socket.AF_INET, ("127.0.0.1", tcp4)) == f"1 {proc.pid}\n"
    try:
        second = checkpointer.restore(store, "server")
        procs.restored.append(second)
        raise AssertionError("a second restore on the same addresses succeeded")
    except checkpointer.CheckpointError as e:
        assert f"127.0.0.1:{tcp4}" in str(e) and "in use" in str(e).lower()


def test_a_unix_socket_bound_by_a_relative_name_comes_back_in_its_directory(procs, store, tmp_path, monkeypatch):
    """A server binds "server.sock" from its working directory and the socket file is made
    0600 (as tmux does); restored by a restorer working elsewhere, it listens at the same
    file again, with the same mode, under the same relative name, and nothing appears in
    the restorer's directory."""
    workdir, elsewhere, out = tmp_path / "srv", tmp_path / "elsewhere", tmp_path / "server.out"
    workdir.mkdir()
    elsewhere.mkdir()
    proc = procs.python("inet_server.py", str(out), "server.sock", cwd=workdir)
    wait_for(lambda: out.exists() and ok_lines(out), "the server to listen")
    path = workdir / "server.sock"
    os.chmod(path, 0o600)
    assert ask_stream(socket.AF_UNIX, str(path)) == f"1 {proc.pid}\n"
    checkpointer.checkpoint([proc.pid], store, "server", tree=True)
    procs.kill(proc)
    monkeypatch.chdir(elsewhere)
    restored = checkpointer.restore(store, "server")
    procs.restored.append(restored)
    assert ask_stream(socket.AF_UNIX, str(path)) == f"2 {proc.pid}\n"
    assert os.stat(path).st_mode & 0o7777 == 0o600
    assert os.listdir(elsewhere) == []
    checkpointer.checkpoint(restored.pids, store, "again", tree=True)
    names = [bytes.fromhex(f["address"]) for f in load_image(store, "again").files
             if f["kind"] == "socket" and f["family"] == "unix" and f["state"] == "listen"]
    assert names == [b"server.sock"]


def test_tcp_connections_that_had_ended_come_back_ended(procs, store, tmp_path):
    """TCP connections closed both ways before the checkpoint (zdtm socket-tcp-closed,
    socket-tcp-close2): the restore tried to bind the client's port again, which the dead
    original's TIME_WAIT holds, and failed ('Address already in use'); now they come back
    reading EOF and refusing writes (EPIPE), as they did, with no warning, and with their
    own addresses (they were connected to a throw-away listener: zdtm's 'A destination
    address mismatch')."""
    out = tmp_path / "ended.out"
    proc = procs.python("ended_connection.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the connections to end")
    checkpointer.checkpoint([proc.pid], store, "ended")
    ended = [f for f in load_image(store, "ended").files if f["kind"] == "socket"]
    assert [(f["state"], f.get("finished")) for f in ended] == [("closed", True)] * 2
    assert sorted(f["peer"][1] for f in ended) == sorted(f["address"][1] for f in ended)
    procs.kill(proc)
    restored = reads_after_a_restore(procs, store, "ended", out)
    assert restored.warnings == []


def test_unix_listeners_whose_socket_files_are_gone_come_back_unreachable_by_name(procs, store, tmp_path):
    """A Unix server whose socket file (and its directory) was removed while it ran, and one
    whose name another socket has taken since (zdtm sk-unix01): the restore tried to bind
    the name again and failed ('No such file or directory', 'Address already in use'); now
    each is bound to its name (getsockname) for the time of the bind and its file removed
    again, the other socket's file left in place, and connections made before carry on."""
    out = tmp_path / "unlinked.out"
    proc = procs.python("unlinked_listener.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the target to lose its socket files")
    checkpointer.checkpoint([proc.pid], store, "unlinked")
    unlinked = [f for f in load_image(store, "unlinked").files if f["kind"] == "socket" and f.get("unlinked")]
    assert len(unlinked) == 2
    procs.kill(proc)                  # (the holder's socket file stays, as after a crash)
    reads_after_a_restore(procs, store, "unlinked", out)


def test_datagram_clients_of_servers_whose_socket_files_are_gone_still_reach_them(procs, store, tmp_path):
    """A Unix datagram server whose file was removed (with its directory, or replaced by a
    FIFO) while its client, connected before, sends to it (zdtm sk-unix01,
    fifo_upon_unix_socket00): the restore connected the client by the server's name, which
    reached nothing (or the FIFO), and left it unconnected with a warning, the datagram
    waiting in the server's queue dropped; now both reach the server through its file made
    again, before that file is removed again."""
    out = tmp_path / "dgram.out"
    proc = procs.python("unlinked_dgram_server.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the target to lose its socket files")
    checkpointer.checkpoint([proc.pid], store, "dgram")
    assert len([f for f in load_image(store, "dgram").files if f["kind"] == "socket" and f.get("unlinked")]) == 2
    procs.kill(proc)
    restored = reads_after_a_restore(procs, store, "dgram", out)
    assert not [w for w in restored.warnings if "connected" in w or "dropped" in w], restored.warnings
    assert not (tmp_path / "run.d").exists() and stat.S_ISFIFO(os.lstat(tmp_path / "fifo.sock").st_mode)


def test_listeners_sharing_a_port_come_back_whatever_their_reuseport_now(procs, store, tmp_path):
    """Two TCP listeners bound to one port with SO_REUSEPORT, one of which turned it off
    since (zdtm socket-tcp-reuseport): the restore bound that one first without it, and
    the other failed ('Address already in use'). Now each listener of a shared address is
    bound with it on, and it is turned off again once all are bound."""
    out = tmp_path / "reuseport.out"
    proc = procs.python("reuseport_pair.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] and ok_lines(out)[0].startswith("ready"),
             "the target to listen twice")
    checkpointer.checkpoint([proc.pid], store, "reuseport")
    procs.kill(proc)
    reads_after_a_restore(procs, store, "reuseport", out)


def test_a_backlog_too_long_to_list_is_still_described():
    """A listening Unix socket with more connections waiting than the kernel can list in
    one reply (~1,600 inodes here: it answers EMSGSIZE) is described, with
    `pending_unlisted` (a checkpoint refuses it by name), not taken for a socket the
    kernel does not know (a checkpoint said 'the kernel does not describe this Unix socket')."""
    import resource
    import socket as socketlib
    from checkpointer import sockets as diag
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    clients = []
    try:
        listener.bind("\0slsfs-test-backlog-%d" % os.getpid())
        listener.listen(4096)
        ino = os.fstat(listener.fileno()).st_ino
        for count in (10, 2000):
            while len(clients) < count:
                client = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
                clients.append(client)
                client.connect(listener.getsockname())
            info = diag.unix_info(ino)
            assert info is not None and info["queued"] == count, info and info["queued"]
            if count == 10:
                assert len(info["pending"]) == 10 and not info.get("pending_unlisted")
            else:
                assert info.get("pending_unlisted") and "pending" not in info
    finally:
        for client in clients:
            client.close()
        listener.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_socketpair_made_by_a_process_that_is_not_root_names_it_as_its_maker_again(procs, store, tmp_path):
    """SO_PEERCRED of a restored socketpair gives the uid and gid of the process that had
    made it (nobody), not those of the restore (root), which makes the pair before it gives
    the process its credentials back: the target checks its own pair at every step."""
    target = Path(__file__).parent / "targets" / "peer_creds.py"
    out = tmp_path / "creds.out"
    proc = procs.start([sys.executable, str(target), str(out)])

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []
    wait_for(lambda: len(lines()) > 5, "the target to check its socketpair")
    checkpointer.checkpoint([proc.pid], store, "creds")
    assert [f.get("peer_creds") for f in load_image(store, "creds").meta["files"] if f["kind"] == "unix_pair"] \
        == [[65534, 65534], [65534, 65534]]
    procs.kill(proc)
    count = len(lines())
    restored = checkpointer.restore(store, "creds")
    procs.restored.append(restored)
    wait_for(lambda: len(lines()) > count + 5 or "BAD" in out.read_text(), "the restored target to check its pair")
    assert not [line for line in lines() if line.startswith("BAD")], lines()[-2:]


def test_a_socketpair_whose_maker_has_exited_names_it_again(procs, store, tmp_path):
    """SO_PEERCRED of a socketpair made by a child that has exited since (it handed both
    ends to its parent) names that child's PID, which no process has now: it did so after
    the restore too, not the PID of the process holding the pair (zdtm sock_peercred). A
    stand-in with that PID makes the pair at restore and exits."""
    out = tmp_path / "maker.out"
    proc = procs.python("peer_creds.py", str(out), "child")
    wait_for(lambda: out.exists() and len(ok_lines(out)) > 5, "the target to check its socketpair")
    checkpointer.checkpoint([proc.pid], store, "maker")
    makers = [f.get("maker") for f in load_image(store, "maker").meta["files"] if f["kind"] == "unix_pair"]
    assert len(set(makers)) == 1 and makers[0] not in (None, proc.pid)
    procs.kill(proc)
    restored = restored_goes_on(procs, store, "maker", out)
    assert not restored.warnings


def test_a_reply_queued_from_a_server_outside_the_image_is_read_after_a_restore(procs, store, tmp_path):
    """What a server outside the image had sent a process (a daemon's answer it had not
    read yet) is still there to read after a restore, then the connection reads as ended."""
    out, path = tmp_path / "client.out", str(tmp_path / "server.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(30)
        proc = procs.python("outside_peer_client.py", str(out), path)
        connection, _ = server.accept()
        with connection:
            connection.settimeout(30)
            assert connection.recv(100) == b"request\n"
            connection.sendall(b"reply 42: done\n")
            wait_for(lambda: "ready" in ok_lines(out), "the client to wait")
            checkpointer.checkpoint([proc.pid], store, "client", tree=True)
            procs.kill(proc)
    [end] = [f for f in load_image(store, "client").files if f["kind"] == "unix_pair"]
    assert end["outside"]
    restored = reads_after_a_restore(procs, store, "client", out)
    assert "got reply 42: done" in ok_lines(out)
    assert any("outside the image is restored ended" in w for w in restored.warnings), restored.warnings


def test_a_tcp_listeners_queue_is_read_as_inet_diag_reports_it():
    """A TCP listener's backlog and the connections waiting to be accepted, read with one
    TCP_INFO (netsockets.listen_queue), are what inet_diag reports for it (the question
    the capture asked before): each connection made and not accepted counts, and an
    accepted one no longer does."""
    from checkpointer import netsockets
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.bind((host, 0))
        except OSError:
            continue        # (no IPv6 here)
        clients = []
        try:
            listener.listen(7)
            ino = os.fstat(listener.fileno()).st_ino
            for waiting in (0, 3):
                while len(clients) < waiting:
                    clients.append(socket.create_connection(listener.getsockname()[:2], timeout=30))
                wait_for(lambda: netsockets.inet_listen_queue(family, socket.IPPROTO_TCP, ino) == (7, waiting),
                         "inet_diag to count the connections")
                assert netsockets.listen_queue(listener, ino) == (7, waiting)
            listener.accept()[0].close()
            assert netsockets.listen_queue(listener, ino) == (7, 2) \
                == netsockets.inet_listen_queue(family, socket.IPPROTO_TCP, ino)
        finally:
            for client in clients:
                client.close()
            listener.close()
