"""File descriptors in flight: sent over a Unix socket (SCM_RIGHTS) and not yet received
when the checkpoint is taken. `fds_in_flight.py OUTFILE DIR CASE` prepares CASE, then writes
"<n> <pid> ok" every 5 ms; when DIR holds "read-now" (removed) it receives and checks:
"read ok", or a BAD line naming what differs. Cases:

- pipe: a stream pair holds "header" (no fds), then "P" with a pipe's read end (the
  sender keeps the write end, closes its read end), then "tail". The receiver reads
  "headerP" with the pipe end (a recvmsg stops after the bytes that carry fds), reads
  from it what the sender writes now, then the tail.
- file: a stream pair holds "F" with a file opened at offset 5; the sender closed its fd
  but kept a dup of the same open file description: the received fd is at offset 5 and
  reads the rest, and the dup's offset moves with it (one description, as before).
- dgram: a datagram pair holds four messages: "one", "two" with a file, "three", "four"
  with two fds (an eventfd whose count is 7, and the write end of a pipe). Each comes back
  whole, in order, with its fds.
- nested: a socketpair end is passed (seqpacket) while a message with a pipe's read end
  waits in its own queue; the receiver gets the end, then the pipe end from it.
- tcp: a TCP connection accepted by a listener is passed (a master handing it to a
  worker) with a request queued in it; the receiver reads the request from it and
  answers, and the client end (kept) gets the answer.
- creds: a datagram pair whose receiver has SO_PASSCRED holds two messages (one with a
  pipe end): they come with the sender's credentials, as before; its peek offset
  (SO_PEEK_OFF), past the first message, is kept.
- tree: a parent sends its child a pipe's read end (with bytes buffered in the pipe) and
  keeps the write end, writing a byte every 5 ms; the child (which writes OUTFILE)
  receives the end, reads the buffered bytes and then the parent's.
- server: a datagram socket bound to a relative path (a log or notification server) holds four datagrams
  from unconnected clients: a line, one with a pipe end (an fd store), one from a socket
  with an abstract name (kept by the process), one from a socket bound to a path, since
  closed and its file removed: the last two are received from the same names.
- embryo: a Unix listener (bound to a relative path) has a connection not accepted yet
  whose client has sent nothing, which is accepted after the restore and carries a
  request and its response.
- talker, closed: a Unix listener has a connection not accepted yet whose client has sent
  bytes (which cannot be read without accepting it), the client kept (talker) or closed
  (closed): refused at checkpoint.
- syslog: a bound datagram server with a client connected to it (glibc's syslog) and a
  line queued: the server is still bound to its path (a new client reaches it), gets the
  line, and the client, still connected, sends on. A bound socket connected to itself
  gets the datagram it sent itself, and sends itself another.
- self: a socket sent over itself (it waits in its own queue): refused at checkpoint.
- sequence: a stream pair holds 40 messages "m<i>" each with a pipe read end carrying the
  byte i (not received in between): order and boundaries over many fds.
"""
import os
import socket
import struct
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
directory, case = sys.argv[2], sys.argv[3]
read_now = os.path.join(directory, "read-now")
SO_PEEK_OFF = 42


def receive(sock, size):
    """(data, fds) of one recvmsg."""
    return receive_from(sock, size)[:2]


def receive_from(sock, size):
    """(data, fds, sender's address) of one recvmsg."""
    sock.settimeout(5)
    data, fds, flags, address = socket.recv_fds(sock, size, 16)
    for fd in fds:          # a wrong fd must not hang the check
        os.set_blocking(fd, False)
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        raise AssertionError(f"truncated ({flags:#x})")
    return data, fds, address


def check(condition, what):
    if not condition:
        raise AssertionError(what)


if case == "pipe":
    sender, receiver = socket.socketpair()
    pipe_r, pipe_w = os.pipe()
    sender.send(b"header")
    socket.send_fds(sender, [b"P"], [pipe_r])
    os.close(pipe_r)
    sender.send(b"tail")

    def read_back():
        data, fds = receive(receiver, 7)
        check((data, len(fds)) == (b"headerP", 1), f"the header and pipe message: {data!r} with {len(fds)} fds")
        os.write(pipe_w, b"through the passed pipe")
        check(os.read(fds[0], 100) == b"through the passed pipe", "the bytes through the passed pipe end")
        check(receiver.recv(100) == b"tail", "the tail")
elif case == "file":
    path = os.path.join(directory, "data")
    with open(path, "wb") as f:
        f.write(b"0123456789abcdef")
    sender, receiver = socket.socketpair()
    fd = os.open(path, os.O_RDONLY)
    os.lseek(fd, 5, os.SEEK_SET)
    kept = os.dup(fd)
    socket.send_fds(sender, [b"F"], [fd])
    os.close(fd)

    def read_back():
        data, fds = receive(receiver, 1)
        check((data, len(fds)) == (b"F", 1), f"the file message: {data!r} with {len(fds)} fds")
        check(os.lseek(fds[0], 0, os.SEEK_CUR) == 5, f"offset {os.lseek(fds[0], 0, os.SEEK_CUR)}, not 5")
        check(os.read(fds[0], 100) == b"56789abcdef", "the file's bytes from offset 5")
        check(os.lseek(kept, 0, os.SEEK_CUR) == 16, "the kept dup shares the offset")
elif case == "dgram":
    path = os.path.join(directory, "data")
    with open(path, "wb") as f:
        f.write(b"datagram file")
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    fd = os.open(path, os.O_RDONLY)
    event = os.eventfd(7)
    pipe_r, pipe_w = os.pipe()
    sender.send(b"one")
    socket.send_fds(sender, [b"two"], [fd])
    sender.send(b"three")
    socket.send_fds(sender, [b"four"], [event, pipe_w])
    for f in (fd, event, pipe_w):
        os.close(f)

    def read_back():
        got = [receive(receiver, 100) for _ in range(4)]
        check([data for data, _ in got] == [b"one", b"two", b"three", b"four"], f"messages {got}")
        check([len(fds) for _, fds in got] == [0, 1, 0, 2], f"fds per message {got}")
        check(os.read(got[1][1][0], 100) == b"datagram file", "the file of message two")
        check(os.eventfd_read(got[3][1][0]) == 7, "the eventfd's count")
        os.write(got[3][1][1], b"x")
        check(os.read(pipe_r, 1) == b"x", "the passed pipe write end")
elif case == "nested":
    carrier, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    inner_sender, inner = socket.socketpair()
    pipe_r, pipe_w = os.pipe()
    socket.send_fds(inner_sender, [b"inner"], [pipe_r])
    socket.send_fds(carrier, [b"outer"], [inner.fileno()])
    for f in (pipe_r, inner.detach()):
        os.close(f)

    def read_back():
        data, fds = receive(receiver, 100)
        check((data, len(fds)) == (b"outer", 1), f"the outer message: {data!r} with {len(fds)} fds")
        inner_end = socket.socket(fileno=fds[0])
        data, fds = receive(inner_end, 100)
        check((data, len(fds)) == (b"inner", 1), f"the inner message: {data!r} with {len(fds)} fds")
        os.write(pipe_w, b"deep")
        check(os.read(fds[0], 100) == b"deep", "the bytes through the innermost pipe end")
elif case == "sequence":
    sender, receiver = socket.socketpair()
    for i in range(40):
        pipe_r, pipe_w = os.pipe()
        os.write(pipe_w, bytes([i]))
        socket.send_fds(sender, [b"m%02d" % i], [pipe_r])
        os.close(pipe_r)
        os.close(pipe_w)

    def read_back():
        for i in range(40):
            data, fds = receive(receiver, 3)
            check((data, len(fds)) == (b"m%02d" % i, 1), f"message {i}: {data!r} with {len(fds)} fds")
            check(os.read(fds[0], 10) == bytes([i]), f"the byte of pipe {i}")
            os.close(fds[0])
elif case == "tcp":
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    socket.send_fds(sender, [b"connection"], [accepted.fileno()])
    accepted.close()
    client.sendall(b"request")

    def read_back():
        data, fds = receive(receiver, 100)
        check((data, len(fds)) == (b"connection", 1), f"the connection message: {data!r} with {len(fds)} fds")
        worker = socket.socket(fileno=fds[0])
        worker.setblocking(True)
        worker.settimeout(5)
        check(worker.recv(100) == b"request", "the request queued in the passed connection")
        worker.sendall(b"response")
        client.settimeout(5)
        check(client.recv(100) == b"response", "the response through the passed connection")
elif case == "creds":
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    pipe_r, pipe_w = os.pipe()
    sender.send(b"plain")
    socket.send_fds(sender, [b"with fd"], [pipe_r])
    os.close(pipe_r)

    receiver.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    check(receiver.recv(100, socket.MSG_PEEK) == b"plain", "a peek")    # the offset moves past it

    def read_back():
        receiver.settimeout(5)
        check(receiver.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF) == 5, "SO_PEEK_OFF")
        check(receiver.recv(100, socket.MSG_PEEK) == b"with fd", "a peek at the peek offset")
        for expected, count in ((b"plain", 0), (b"with fd", 1)):
            data, ancillary, _, _ = receiver.recvmsg(100, socket.CMSG_SPACE(64))
            fds = [struct.unpack("i", p)[0] for lv, kind, p in ancillary if kind == socket.SCM_RIGHTS]
            creds = [struct.unpack("3i", p) for lv, kind, p in ancillary if kind == socket.SCM_CREDENTIALS]
            check((data, len(fds)) == (expected, count), f"{data!r} with {len(fds)} fds")
            check(creds == [(os.getpid(), os.getuid(), os.getgid())], f"credentials {creds}")
        check(receiver.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED) == 1, "SO_PASSCRED")
elif case == "tree":
    parent_end, child_end = socket.socketpair()
    pipe_r, pipe_w = os.pipe()
    os.write(pipe_w, b"buffered")
    if os.fork() == 0:          # the worker: receives the pipe end its parent sent
        parent_end.close()
        os.close(pipe_w)
        child_end.recv(1, socket.MSG_PEEK)      # (until the parent has sent it)

        def read_back():
            data, fds = receive(child_end, 100)
            check((data, len(fds)) == (b"pipe", 1), f"the pipe message: {data!r} with {len(fds)} fds")
            check(os.read(fds[0], 8) == b"buffered", "the bytes buffered in the passed pipe")
            for _ in range(400):
                try:
                    check(os.read(fds[0], 1) == b"l", "a byte the parent writes now")
                    return
                except BlockingIOError:
                    time.sleep(0.005)
            raise AssertionError("the parent's writes do not reach the passed pipe end")
    else:                       # the master: keeps the write end, writes a byte every 5 ms
        child_end.close()
        socket.send_fds(parent_end, [b"pipe"], [pipe_r])
        os.close(pipe_r)
        os.set_blocking(pipe_w, False)
        while True:
            time.sleep(0.005)
            try:
                os.write(pipe_w, b"l")
            except BlockingIOError:
                pass
elif case == "server":
    os.chdir(directory)
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("server.sock")            # a relative path (zdtm socket_close_data01)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    named = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    named.bind(b"\0fds-in-flight-%d" % os.getpid())
    pipe_r, pipe_w = os.pipe()
    client.sendto(b"log line", receiver.getsockname())
    client.sendmsg([b"store this fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", pipe_r))], 0,
                   receiver.getsockname())
    named.sendto(b"from a name", receiver.getsockname())
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gone.bind(os.path.join(directory, "gone.sock"))
    gone.sendto(b"from a gone name", receiver.getsockname())
    gone.close()
    os.unlink(os.path.join(directory, "gone.sock"))
    os.close(pipe_r)

    def read_back():
        got = [receive_from(receiver, 100) for _ in range(4)]
        check([data for data, _, _ in got] == [b"log line", b"store this fd", b"from a name", b"from a gone name"],
              f"datagrams {got}")
        check([len(fds) for _, fds, _ in got] == [0, 1, 0, 0], f"fds per datagram {got}")
        check([sender for _, _, sender in got[2:]] == [named.getsockname(), os.path.join(directory, "gone.sock")],
              f"senders {got}")
        check(not os.path.exists("gone.sock"), "the sender's socket file made for the restore is left")
        os.write(pipe_w, b"stored")
        check(os.read(got[1][1][0], 100) == b"stored", "the bytes through the stored pipe end")
elif case == "embryo":
    os.chdir(directory)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("listener.sock")          # a relative path, as programs often bind
    listener.listen(8)
    quiet = socket.socket(socket.AF_UNIX)
    quiet.connect(listener.getsockname())

    def read_back():
        listener.settimeout(5)
        served, _ = listener.accept()
        served.settimeout(5)
        quiet.settimeout(5)
        quiet.sendall(b"request")
        check(served.recv(100) == b"request", "the request through the connection accepted now")
        served.sendall(b"response")
        check(quiet.recv(100) == b"response", "the response")
        listener.settimeout(0.2)
        try:
            listener.accept()
            raise AssertionError("a second connection waits")
        except socket.timeout:
            pass
elif case in ("talker", "closed"):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(directory, "listener.sock"))
    listener.listen(8)
    talker = socket.socket(socket.AF_UNIX)
    talker.connect(listener.getsockname())
    talker.send(b"early words")
    if case == "closed":
        talker.close()

    def read_back():
        raise AssertionError("not restorable")
elif case == "syslog":
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(os.path.join(directory, "log.sock"))
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.connect(server.getsockname())        # as glibc's syslog() does
    client.send(b"<14>first line")
    itself = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    itself.bind(os.path.join(directory, "itself.sock"))
    itself.connect(itself.getsockname())        # (zdtm sockets_dgram)
    itself.send(b"note to self")

    def read_back():
        itself.settimeout(5)
        check(itself.recv(100) == b"note to self", "the datagram a socket connected to itself sent itself")
        itself.send(b"another")
        check(itself.recv(100) == b"another", "a datagram it sends itself now")
        server.settimeout(5)
        check(server.recv(100) == b"<14>first line", "the line queued at the checkpoint")
        client.send(b"<14>second line")
        check(server.recv(100) == b"<14>second line", "a line sent through the connected client now")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
            other.sendto(b"<14>third line", os.path.join(directory, "log.sock"))
        check(server.recv(100) == b"<14>third line", "a line sent to the server's path now")
elif case == "self":
    a, b = socket.socketpair()
    socket.send_fds(a, [b"myself"], [b.fileno()])

    def read_back():
        raise AssertionError("not restorable")
else:
    raise SystemExit(f"unknown case {case}")

n, pid = 0, os.getpid()
while True:
    if os.path.exists(read_now):
        os.unlink(read_now)
        try:
            read_back()
            out.write("read ok\n")
        except (AssertionError, OSError) as exc:
            out.write(f"BAD {case}: {exc}\n")
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
