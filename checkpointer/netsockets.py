"""Sockets that are not socket pairs: listening and bound sockets, and connections
whose peer cannot follow.

What: `describe(sock, unix)` records a TCP/UDP (IPv4/IPv6) or Unix socket borrowed
from a frozen process: family, type, protocol, options (OPTIONS: reuse, keepalive and its
timings, priority, timeouts, linger, the bound device, TOS/TTL, TCP_NODELAY, TCP_CORK,
buffer sizes set by the program (BUFFER_SIZES) ...), a classic BPF filter (sockfilter.py),
bound address, backlog (from sock_diag), a UDP socket's connected peer, and its state: `listen`,
`bound`, `unbound` or `closed` (a connected stream whose peer is outside the image; one
whose peer is in the image too is given its TCP state by tcp_repair.py: `established`).
`rebuild(sock, record)` gives a fresh socket, made inside the restored process and
borrowed by the restorer, the same options, address and state.
Why: servers (Redis, an HTTP service) come back listening on the same address, with
their memory intact; clients simply reconnect (like CRIU's --tcp-close).

Inet sockets of the image that share an address (SO_REUSEPORT) are all bound with it on;
one that had turned it off since gets it off again once all are bound (file_restore.py).

A TCP connection that had ended before the checkpoint (closed both ways, or reset: no peer
any more) is `closed` and `finished`: it reads EOF and writes EPIPE again, with no warning
(nothing is lost), and names its own and its peer's addresses as before (made in repair
mode and aborted: tcp_repair.end, the dead original's TIME_WAIT on the pair destroyed
first); where that pair is in use (the original still runs) it stands unbound, connected
to a throw-away listener.

Simplifications: a TCP connection whose peer is outside the image (unless the checkpoint
kills its processes: tcp_repair.hold), or that is not established, or without CAP_NET_ADMIN,
comes back closed (reads give ECONNRESET, then EOF; writes give EPIPE), with a warning (a
Unix stream connection whose peer is outside the image is a `unix_pair` that comes back
ended by its peer: files.py);
connections waiting in a listen queue (not yet accepted) are dropped, and so are
datagrams queued on a UDP socket (both counted in the warning); a stale Unix socket
file at a listening path is replaced (the new one gets the old file's mode and owner); a
Unix socket whose file was gone at the checkpoint (`unlinked`) is bound to its name again
and its file removed at once (the image's sockets that had connected to it reach it
through that file before it goes: datagram clients, queued datagrams, connections not yet
accepted; one outside the image cannot, and a datagram client of it comes back unconnected,
with a warning);
a relative Unix path is taken from the process's working directory at the checkpoint
(bound from there, so the socket keeps its relative name); other options keep their
defaults, and so do buffer sizes the program did not set (setting one would turn the
kernel's autotuning off).
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import threading

from . import kernel, sockets, sockfilter, tcp_repair
from .errors import CheckpointError

TCP_LISTEN, TCP_CLOSE = 10, 7
SO_PEERNAME = 28
TCP_INFO_SEGS_AT = 136      # struct tcp_info: tcpi_segs_out, tcpi_segs_in (u32 each)
TCP_INFO_LISTEN_AT = 24     # ... tcpi_unacked, tcpi_sacked: a listener's queued connections and backlog
CLONE_FS = 0x200
NLM_F_DUMP, NLMSG_DONE = 0x300, 3
INET_DIAG_REQ_LEN = 56
OPTIONS = {  # recorded by name: (level, option, size of a struct value or None for an int); V6ONLY before bind
    "SO_REUSEADDR": (socket.SOL_SOCKET, socket.SO_REUSEADDR, None),
    "SO_REUSEPORT": (socket.SOL_SOCKET, socket.SO_REUSEPORT, None),
    "SO_KEEPALIVE": (socket.SOL_SOCKET, socket.SO_KEEPALIVE, None),
    "SO_BROADCAST": (socket.SOL_SOCKET, socket.SO_BROADCAST, None),
    "SO_OOBINLINE": (socket.SOL_SOCKET, socket.SO_OOBINLINE, None),
    "SO_PRIORITY": (socket.SOL_SOCKET, socket.SO_PRIORITY, None),
    "SO_MARK": (socket.SOL_SOCKET, 36, None),                               # SO_MARK
    "SO_RCVLOWAT": (socket.SOL_SOCKET, socket.SO_RCVLOWAT, None),
    "SO_PASSCRED": (socket.SOL_SOCKET, socket.SO_PASSCRED, None),
    "SO_PASSSEC": (socket.SOL_SOCKET, 34, None),                           # SO_PASSSEC
    "SO_DONTROUTE": (socket.SOL_SOCKET, socket.SO_DONTROUTE, None),
    "SO_NO_CHECK": (socket.SOL_SOCKET, 11, None),                          # SO_NO_CHECK
    "SO_RCVTIMEO": (socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16),          # struct timeval
    "SO_SNDTIMEO": (socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16),
    "SO_LINGER": (socket.SOL_SOCKET, socket.SO_LINGER, 8),               # struct linger
    "SO_BINDTODEVICE": (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16),  # an interface name (IFNAMSIZ)
    "TCP_NODELAY": (socket.IPPROTO_TCP, socket.TCP_NODELAY, None),
    "TCP_KEEPIDLE": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, None),
    "TCP_KEEPINTVL": (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, None),
    "TCP_KEEPCNT": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, None),
    "IP_TOS": (socket.IPPROTO_IP, socket.IP_TOS, None),
    "IP_TTL": (socket.IPPROTO_IP, socket.IP_TTL, None),
    "IP_FREEBIND": (socket.IPPROTO_IP, 15, None),                          # IP_FREEBIND
    "IPV6_V6ONLY": (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, None),
    "TCP_CORK": (socket.IPPROTO_TCP, socket.TCP_CORK, None),
    "SO_BUF_LOCK": (socket.SOL_SOCKET, 72, None),   # SO_BUF_LOCK: after the sizes, which lock them too
}
# buffer sizes, recorded only when the program set them (SO_BUF_LOCK shows which), as the kernel
# reports them (twice what was asked): set again with SO_*BUFFORCE (as root: above the sysctl
# maximum too) to half of that
BUFFER_SIZES = {"SO_SNDBUF": (socket.SO_SNDBUF, 32, 1), "SO_RCVBUF": (socket.SO_RCVBUF, 33, 2)}  # get, force, lock bit
FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}


def _applies(name: str, family: int, sock_type: int) -> bool:
    if name.startswith("TCP_"):
        return family != socket.AF_UNIX and sock_type == socket.SOCK_STREAM
    if name.startswith("IPV6_"):
        return family == socket.AF_INET6
    if name == "IP_FREEBIND":   # one flag of the socket, for IPv4 and IPv6 addresses alike
        return family in (socket.AF_INET, socket.AF_INET6)
    if name.startswith("IP_"):
        return family == socket.AF_INET
    if name in ("SO_PASSCRED", "SO_PASSSEC"):
        return family == socket.AF_UNIX
    return family != socket.AF_UNIX or name not in ("SO_BROADCAST", "SO_BINDTODEVICE", "SO_DONTROUTE", "SO_NO_CHECK")


_APPLYING: dict[tuple[int, int], list[tuple[str, int, int, int | None]]] = {}   # _applying's


def _applying(family: int, sock_type: int) -> list[tuple[str, int, int, int | None]]:
    """(name, level, option, size) of the OPTIONS that apply to sockets of this family and
    type, worked out once per kind (read_options runs in the stop: the 26 _applies calls
    of each listening socket were ~20% of its reading)."""
    found = _APPLYING.get((family, sock_type))
    if found is None:
        found = _APPLYING[(family, sock_type)] = [(name, *OPTIONS[name]) for name in OPTIONS
                                                   if _applies(name, family, sock_type)]
    return found


def _get_option(sock: socket.socket, name: str) -> int | str:
    if name in BUFFER_SIZES:
        return sock.getsockopt(socket.SOL_SOCKET, BUFFER_SIZES[name][0])
    level, opt, size = OPTIONS[name]
    return sock.getsockopt(level, opt) if size is None else sock.getsockopt(level, opt, size).hex()


def _set_option(sock: socket.socket, name: str, value: int | str) -> None:
    if name in BUFFER_SIZES:
        sock.setsockopt(socket.SOL_SOCKET, BUFFER_SIZES[name][1], int(value) // 2)
        return
    level, opt, size = OPTIONS[name]
    sock.setsockopt(level, opt, value if size is None else bytes.fromhex(value))


def describe(sock: socket.socket, unix: dict | None, ino: int) -> dict:
    """The record of a borrowed socket (`unix`: its unix_info, for a Unix socket)."""
    family, sock_type = int(sock.family), int(sock.type)
    record = {"kind": "socket", "family": FAMILIES[family], "type": sockets.TYPES.get(sock_type, sock_type),
              "protocol": sock.proto, "ino": ino, "options": {}, "address": None, "peer": None,
              "backlog": 0, "dropped": 0}
    if family == socket.AF_UNIX:
        name = unix["name"]
        if name and name[:1] != b"\0":
            name = name.split(b"\0")[0]  # a path name comes with its terminating NUL
        record["address"] = name.hex() if name else None
        listening, connected = unix["state"] == TCP_LISTEN, unix["state"] != TCP_CLOSE
        if listening:
            record["backlog"], record["dropped"] = unix["max_backlog"], unix["queued"]
    else:
        address = sock.getsockname()
        record["address"] = list(address) if address[1] else None
        listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        try:
            record["peer"] = list(sock.getpeername())
            connected = True
        except OSError:
            connected = False
        if listening:
            record["backlog"], record["dropped"] = listen_queue(sock, ino)
        elif sock_type == socket.SOCK_DGRAM and sockets.has_pending(sock):
            record["dropped"] = 1
        if sock_type == socket.SOCK_DGRAM and (shut := sockets.udp_shutdown(sock, ino)):
            record["shutdown"] = shut    # version 17
    if listening:
        record["state"] = "listen"
    elif connected and sock_type != socket.SOCK_DGRAM:
        record["state"] = "closed"
    elif sock_type == socket.SOCK_STREAM and family != socket.AF_UNIX and _ended(sock):
        record.update(state="closed", finished=True, peer=_peer_name(sock))    # version 14, its peer 17
    else:
        record["state"] = "bound" if record["address"] else "unbound"
    if record["state"] != "closed":
        read_options(sock, record)
    return record


def _ended(sock: socket.socket) -> bool:
    """Whether a TCP socket with no peer is a connection that has ended (closed both ways,
    or reset: its state CLOSE, segments sent or received, TCP_INFO), not a socket only bound:
    its port may be held by the dead original's TIME_WAIT, and it must read EOF, not ENOTCONN."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SEGS_AT + 8)
    return len(info) >= TCP_INFO_SEGS_AT + 8 and info[0] == TCP_CLOSE \
        and any(struct.unpack_from("II", info, TCP_INFO_SEGS_AT))


def _peer_name(sock: socket.socket) -> list | None:
    """The peer's address of an ended TCP connection (SO_PEERNAME still names it, where
    getpeername answers ENOTCONN), as getpeername would give it; None if it has none."""
    size = 28 if sock.family == socket.AF_INET6 else 16      # struct sockaddr_in6 / sockaddr_in
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERNAME, size)
    port = struct.unpack_from(">H", raw, 2)[0]
    if not port:
        return None
    if sock.family == socket.AF_INET6:
        flowinfo, scope_id = struct.unpack_from(">I", raw, 4)[0], struct.unpack_from("=I", raw, 24)[0]
        return [socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id]
    return [socket.inet_ntop(socket.AF_INET, raw[4:8]), port]


def read_options(sock: socket.socket, record: dict) -> None:
    """Put the socket's options (and its filter) in its record. Not for a connection that
    comes back closed: ~25 us of getsockopt calls a socket (a server's 50 clients: 1.3 ms of
    every stop) for a socket the restore resets anyway; files.py reads them for the ends it
    keeps `established` (both in the image)."""
    family, sock_type = int(sock.family), int(sock.type)
    locked = sock.getsockopt(socket.SOL_SOCKET, OPTIONS["SO_BUF_LOCK"][1])
    for name, (_, _, bit) in BUFFER_SIZES.items():
        if locked & bit:
            record["options"][name] = _get_option(sock, name)
    options, getsockopt = record["options"], sock.getsockopt
    for name, level, option, size in _applying(family, sock_type):    # (_get_option's, inline)
        options[name] = getsockopt(level, option) if size is None else getsockopt(level, option, size).hex()
    if (program := sockfilter.read(sock.fileno())) is not None:
        record["filter"] = program      # version 8


def listen_queue(sock: socket.socket, ino: int) -> tuple[int, int]:
    """(backlog, connections waiting to be accepted) of a listening inet socket. For TCP,
    from TCP_INFO, which gives a listener these two in place of tcpi_sacked and
    tcpi_unacked (sk_max_ack_backlog and sk_ack_backlog, what inet_diag reports as its
    wqueue and rqueue): one getsockopt, where the inet_diag question opened a netlink
    socket and listed every listener of the namespace to find this one (~70 us of a
    Redis stop for each of its two listeners, at every checkpoint); another protocol
    (MPTCP) is asked through inet_diag still."""
    if sock.proto not in (0, socket.IPPROTO_TCP):       # (0: a stream's default, TCP)
        return inet_listen_queue(int(sock.family), sock.proto, ino)
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LISTEN_AT + 8)
    queued, backlog = struct.unpack_from("II", info, TCP_INFO_LISTEN_AT)
    return backlog, queued


def inet_listen_queue(family: int, protocol: int, ino: int) -> tuple[int, int]:
    """(backlog, connections waiting to be accepted) of a listening socket, from inet_diag."""
    sockid = bytes(48)
    request = struct.pack("=BBBBI", family, protocol, 0, 0, 1 << TCP_LISTEN) + sockid
    header = struct.pack("=IHHII", 16 + len(request), sockets.SOCK_DIAG_BY_FAMILY,
                         sockets.NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, sockets.NETLINK_SOCK_DIAG) as nl:
        nl.send(header + request)
        while True:
            reply, offset = nl.recv(1 << 16), 0
            while offset + 16 <= len(reply):
                length, kind = struct.unpack_from("=IH", reply, offset)
                if kind in (NLMSG_DONE, sockets.NLMSG_ERROR) or length < 16:
                    return socket.SOMAXCONN, 0
                queued, backlog, _, inode = struct.unpack_from("=IIII", reply, offset + 16 + 56)
                if inode == ino:
                    return backlog, queued
                offset += (length + 3) & ~3


def shared_addresses(records: list[dict]) -> set[tuple]:
    """The (family, type, address) that several listening or bound inet sockets of the image
    share (SO_REUSEPORT: each had it on when it bound, though one may have turned it off
    since; or UDP's SO_REUSEADDR): each is bound with SO_REUSEPORT on (see `sharing`)."""
    seen: dict[tuple, int] = {}
    for record in records:
        if (key := sharing(record)) is not None:
            seen[key] = seen.get(key, 0) + 1
    return {key for key, count in seen.items() if count > 1}


def sharing(record: dict) -> tuple | None:
    """The key of shared_addresses for a listening or bound inet socket record, else None."""
    if record["kind"] != "socket" or record["family"] == "unix" or record["state"] not in ("listen", "bound"):
        return None
    return (record["family"], record["type"], tuple(record["address"]))


def warning(record: dict, owner: str) -> str | None:
    """What the restore could not bring back for this socket, or None."""
    where = _show(record["address"], record["family"])
    if record["state"] == "closed" and not record.get("finished"):
        return (f"{owner}: the {record['family']} {record['type']} connection {show(record)} is restored "
                f"closed ({record.get('closed_because', 'its peer cannot follow')})")
    if record["dropped"] and record["state"] == "listen":
        return f"{owner}: {record['dropped']} connection(s) not yet accepted on {where} were dropped"
    if record["dropped"]:
        return f"{owner}: datagrams queued on {where} were dropped"
    return None


def show_address(record: dict) -> str:
    """A socket's own address, for messages."""
    return _show(record["address"], record["family"])


def show(record: dict) -> str:
    """A connection's addresses, for messages."""
    return f"{_show(record['address'], record['family'])} -> {_show(record['peer'], record['family'])}"


def _show(address, family: str) -> str:
    if address is None:
        return "(unnamed)"
    if family == "unix":
        raw = bytes.fromhex(address)
        return "@" + raw[1:].decode(errors="replace") if raw[:1] == b"\0" else raw.decode(errors="replace")
    return f"[{address[0]}]:{address[1]}" if family == "inet6" else f"{address[0]}:{address[1]}"


def rebuild(sock: socket.socket, record: dict, remap, *, share_port: bool = False, cwd: str = "/",
            root: str = "/") -> int | None:
    """Give a fresh socket (same family/type) the record's options, address and state.
    `cwd`: the process's working directory at the checkpoint (a relative Unix path's base);
    `root`: its root directory (an absolute Unix path is its, as chroot() made it).
    Returns, for a Unix socket whose file was gone at the checkpoint (`unlinked`), an
    O_PATH descriptor of the file it is bound to again, taken before that file is removed
    (the caller closes it): the only way left to reach it, for the image's sockets that had
    connected to it before its name went (connect to /proc/self/fd/N); else None.

    `share_port`: an inet socket bound to an address with no peer (a listener, a datagram
    server) is given SO_REUSEPORT first, so several restored copies serve the same port (the
    kernel spreads new connections among them)."""
    family = sock.family
    share_port = share_port and family != socket.AF_UNIX and record["peer"] is None
    for name, value in record["options"].items():
        if _get_option(sock, name) != value:   # only changes: some options need privileges to set at all
            _set_option(sock, name, value)
    if "filter" in record:
        sockfilter.attach(sock.fileno(), record["filter"])
    if record["state"] == "closed":
        if not (record.get("finished") and record["peer"] and _end(sock, record)):
            _make_closed(sock, record.get("finished", False))
        return None
    if record["state"] == "established":    # tcp_repair.py binds and connects
        return None
    if record["address"] is None:
        shut_down(sock, record.get("shutdown", 0))
        return None
    reuse = record["options"].get("SO_REUSEADDR", 0)
    if family != socket.AF_UNIX:  # a port left in TIME_WAIT by the dead original is not "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    kept = None
    try:
        if family == socket.AF_UNIX:
            kept = _bind_unix(sock, bytes.fromhex(record["address"]), remap, cwd, root,
                              record.get("unlinked", False))
        else:
            _bind_inet(sock, tuple(record["address"]), record["options"].get("IP_FREEBIND", 0))
        if record["state"] == "listen":
            sock.listen(record["backlog"])
    except OSError as e:
        hint = ("a process that does not share the port holds it: the running original? stop it "
                "first" if share_port else "is another process using that address now?")
        raise CheckpointError(f"cannot recreate the {record['family']} socket on "
                              f"{_show(record['address'], record['family'])}: {e.strerror} "
                              f"({hint})") from None
    if family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
    if record["peer"] is not None and record["type"] == "dgram":
        sock.connect(tuple(record["peer"]))
    shut_down(sock, record.get("shutdown", 0))
    return kept


def _bind_inet(sock: socket.socket, address: tuple, freebind: int) -> None:
    """Bind to `address`. One that is not local (any more) is bound with IP_FREEBIND for the
    time of the bind: the original was bound to it, so it had the flag then, or the address
    was local, and a program may turn the flag off once bound (zdtm sk-freebind-false)."""
    try:
        sock.bind(address)
    except OSError as exc:
        if exc.errno != errno.EADDRNOTAVAIL or freebind:
            raise
        level, opt, _ = OPTIONS["IP_FREEBIND"]
        sock.setsockopt(level, opt, 1)
        try:
            sock.bind(address)
        finally:
            sock.setsockopt(level, opt, 0)


def shut_down(sock: socket.socket, mask: int) -> None:
    """Shut a socket down as the kernel's shutdown `mask` says (1: receiving, 2: sending,
    3: both; 0: nothing), after it is bound, connected and refilled. The kernel sets the
    mask of an unconnected UDP socket too, though it answers ENOTCONN."""
    if mask:
        try:
            sock.shutdown((socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR)[mask - 1])
        except OSError as exc:
            if exc.errno != errno.ENOTCONN or sock.type != socket.SOCK_DGRAM:
                raise


def _bind_unix(sock: socket.socket, name: bytes, remap, cwd: str, root: str, unlinked: bool = False) -> int | None:
    """Bind to an abstract name, or to a path where the dead original's socket file (if
    any) is replaced by one with the same mode and owner. A process in a root of its own (a
    --root group) is bound to its name as it gave it, resolved in that root (the name its
    getsockname() shows, and the next checkpoint records). `unlinked`: the socket file was
    gone at the checkpoint: bound to the same name (which getsockname shows), with the
    directories missing on its way made, and a file now at that name (another socket bound
    to it since) moved aside, for the time of the bind; then the file unlinked, after an
    O_PATH descriptor of it is taken, which is returned (see rebuild)."""
    if name[:1] == b"\0":
        sock.bind(name)
        return None
    relative, directory = name[:1] != b"/", remap(cwd)
    rooted = remap(root) if root != "/" else None
    path = rooted_path(rooted, directory, os.fsdecode(name), remap)
    if unlinked:
        made = _make_directories(os.path.dirname(path))
        aside = f"{path}.slsfs-aside-{os.urandom(4).hex()}" if os.path.lexists(path) else None
        if aside:
            os.rename(path, aside)
        try:
            if relative or rooted:
                _bind_from(directory, sock, name, rooted)
            else:
                sock.bind(path)
            kept = os.open(path, os.O_PATH | os.O_CLOEXEC)
            os.unlink(path)
        finally:
            if aside:
                os.rename(aside, path)
            for made_directory in reversed(made):
                os.rmdir(made_directory)
        return kept
    try:
        old = os.lstat(path)
    except FileNotFoundError:
        old = None
    if old is not None and stat.S_ISSOCK(old.st_mode):
        os.unlink(path)                 # the dead original's socket file
    else:
        old = None                      # (anything else there: bind fails on it, saying so)
    if relative or rooted:
        _bind_from(directory, sock, name, rooted)
    else:
        sock.bind(path)
    if old is not None:
        os.chown(path, old.st_uid, old.st_gid)
        os.chmod(path, stat.S_IMODE(old.st_mode))
    return None


def _make_directories(directory: str) -> list[str]:
    """Make `directory` and its missing ancestors; the ones made, outermost first."""
    missing = []
    while not os.path.isdir(directory) and directory != os.path.dirname(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for made in reversed(missing):
        os.mkdir(made, 0o700)
    return list(reversed(missing))


def rooted_path(root: str | None, directory: str, name: str, remap) -> str:
    """Where the Unix socket path `name` of a process is, as the restorer reaches it: from
    its working `directory` if relative, in its `root` (None: the restorer's own, and the
    name through `remap`) if absolute."""
    if not name.startswith("/"):
        return os.path.join(directory, name)
    return os.path.join(root, name.lstrip("/")) if root else remap(name)


def _bind_from(directory: str, sock: socket.socket, name: bytes, root: str | None = None) -> None:
    """bind(name) resolved from `directory`, in `root` if given: in a thread with a working
    and a root directory of its own (unshare(CLONE_FS)), so the restorer's are left alone."""
    failure: list[OSError] = []

    def bind() -> None:
        try:
            kernel.syscall(kernel.NR["unshare"], CLONE_FS)
            os.chdir(directory)
            if root:
                os.chroot(root)
            sock.bind(name)
        except OSError as e:
            failure.append(e)
    thread = threading.Thread(target=bind, name="bind-unix-socket")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _end(sock: socket.socket, record: dict) -> bool:
    """Whether an ended TCP connection could be made again with its own addresses
    (tcp_repair.end); if not (the address pair is in use), `_make_closed` stands in."""
    try:
        tcp_repair.end(sock, tuple(record["address"]), tuple(record["peer"]))
    except OSError:
        return False
    return True


def _make_closed(sock: socket.socket, finished: bool = False) -> None:
    """Connect the socket to a throw-away listener whose accepted end is reset (TCP) or
    closed (Unix), so the application sees a connection its peer has ended. A datagram
    socket stays unconnected. `finished`: a TCP connection that had ended before the
    checkpoint: the accepted end closes in order and the socket shuts its side down, so it
    reads EOF and writes EPIPE as it did."""
    if sock.type == socket.SOCK_DGRAM:
        return
    if sock.family == socket.AF_UNIX:
        listener_address = b"\0slsfs-closed-" + os.urandom(8).hex().encode()
    else:
        bound = sock.getsockname()[0]      # (an ended connection whose pair was taken: bound)
        listener_address = (("::ffff:127.0.0.1" if bound.startswith("::ffff:") else "::1", 0)
                            if sock.family == socket.AF_INET6 else ("127.0.0.1", 0))
    with socket.socket(sock.family, sock.type) as listener:
        listener.bind(listener_address)
        listener.listen(1)
        sock.connect(listener.getsockname())
        accepted, _ = listener.accept()
        if sock.family != socket.AF_UNIX and not finished:
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()
    if finished:
        sock.shutdown(socket.SHUT_WR)
