"""Socket options (zdtm sk-freebind, sk-freebind-false, sock_opts00, sock_opts02, sock_tcp_opts00):
IP_FREEBIND on an IPv6 socket (its non-local address could not be bound again), a socket
bound to such an address whose IP_FREEBIND was then turned off (the restore failed: "Cannot
assign requested address"), buffer sizes a program
set (SO_BUF_LOCK), TCP_CORK, SO_DONTROUTE, SO_NO_CHECK, SO_PASSSEC, and the options of a connection kept established (read only once
it is known to be kept) are as they were after a restore."""
from __future__ import annotations

import checkpointer
from checkpointer import load_image

from ckpt_helpers import goes_on_after_a_restore, ok_lines, restored_goes_on, wait_for


def test_freebind_buffer_sizes_and_cork_come_back(procs, store, tmp_path):
    out = tmp_path / "options.out"
    proc = procs.python("socket_options.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the sockets to be made")
    checkpointer.checkpoint([proc.pid], store, "options")
    sockets = [f for f in load_image(store, "options").files if f["kind"] == "socket"]
    listener = next(f for f in sockets if f["state"] == "listen")
    assert listener["options"]["SO_BUF_LOCK"] == 3 and listener["options"]["SO_SNDBUF"] == 100000
    ends = [f for f in sockets if f["state"] == "established"]
    assert len(ends) == 2 and {f["options"]["TCP_NODELAY"] for f in ends} == {0, 1}
    procs.kill(proc)
    restored_goes_on(procs, store, "options", out)


def test_a_socket_filter_comes_back(procs, store, tmp_path):
    """A classic BPF filter (SO_ATTACH_FILTER; zdtm sock_filter00) still filters after a restore."""
    out = tmp_path / "filter.out"
    proc = procs.python("filtered_socket.py", str(out))
    goes_on_after_a_restore(procs, store, proc, out, "filter", "the target to filter")


def test_udp_sockets_stay_shut_down(procs, store, tmp_path):
    """UDP sockets shut down for sending (connected, and not: the kernel sets its mask all
    the same) still fail to send after a restore, and one shut down for receiving still
    polls POLLRDHUP (zdtm socket_udp_shutdown: it sent)."""
    out = tmp_path / "shut.out"
    proc = procs.python("shut_down_udp.py", str(out))
    goes_on_after_a_restore(procs, store, proc, out, "shut", "the target to check its sockets")
    masks = sorted(f.get("shutdown", 0) for f in load_image(store, "shut").files if f["kind"] == "socket")
    assert masks == [1, 2, 2]


def test_a_dual_stack_connection_with_both_ends_in_the_image_is_repaired(procs, store, tmp_path):
    """An IPv4 client's connection to a dual-stack IPv6 server (zdtm socket-tcp4v6-local):
    the server's end names the addresses as ::ffff:127.0.0.1, the client's as 127.0.0.1;
    they are one connection, kept with TCP repair (it came back closed: 'its peer cannot
    follow')."""
    out = tmp_path / "dual.out"
    proc = procs.python("dual_stack.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the connection to carry counters")
    checkpointer.checkpoint([proc.pid], store, "dual")
    states = sorted(f["state"] for f in load_image(store, "dual").files if f["kind"] == "socket")
    assert states == ["established", "established", "listen"]
    procs.kill(proc)
    restored_goes_on(procs, store, "dual", out)
