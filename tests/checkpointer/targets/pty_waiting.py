"""Bytes waiting in a pseudo-terminal: `pty_waiting.py OUTFILE GOFILE [canonical]`.

The parent holds a pty master; its child (the slave side) puts its terminal in
non-canonical mode (or, with `canonical`, canonical mode: it reads whole lines) with echo,
ICRNL and INLCR on (so that input processed twice, or echoed twice, would differ) and
writes OUTPUT (output processing turns each "\\n" into "\\r\\n"); the parent writes INPUT
(in canonical mode, lines with editing characters and an unfinished line after them,
which the child reads once its lines are read by turning ICANON off). Neither reads yet: the parent prints "waiting" once the
kernel holds all of it, and both wait for GOFILE to exist. Then the parent reads what waits
at the master and the child what waits at its slave, and each compares with what the same
exchange gave on a second pair at the start, never checkpointed (the kernel's processing
is deterministic). The parent prints "output ok"/"input ok" or a BAD line.
A checkpoint taken while "waiting" must keep both queues exactly: a restore that dropped
them leaves the parent's read waiting for ever."""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

OUTPUT = b"".join(b"line %d of what the program wrote\n" % i for i in range(60))
INPUT = b"typed ahead\rsecond\nthird \x7f with \t and more\r\n" * 4


def waiting(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, bytes(4)))[0]


def settle(fd: int) -> int:
    """The byte count waiting at fd once it stops growing."""
    count, since = waiting(fd), time.monotonic()
    while time.monotonic() - since < 0.3:
        time.sleep(0.01)
        if waiting(fd) != count:
            count, since = waiting(fd), time.monotonic()
    return count


def read_all(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0.3)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:                        # EIO: the slave side has closed
            break
        if not chunk:
            break
        data += chunk
    return data


CANONICAL = sys.argv[3:] == ["canonical"]
if CANONICAL:
    INPUT += b"an unfinished line, with a \x15killed start and an erased x\x7f"


def exchange(go):
    """One pair through the whole exchange: (bytes the master read, bytes the slave read)."""
    answer_r, answer_w = os.pipe()
    settled_r, settled_w = os.pipe()
    pid, master = pty.fork()
    if pid == 0:
        attrs = termios.tcgetattr(0)
        attrs[0] |= termios.ICRNL | termios.INLCR
        attrs[3] = (attrs[3] & ~termios.ICANON) | termios.ECHO | (termios.ICANON if CANONICAL else 0)
        attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
        termios.tcsetattr(0, termios.TCSANOW, attrs)
        os.write(1, OUTPUT)
        os.write(answer_w, b"r")
        os.read(settled_r, 1)                 # the parent's input is all there
        while not go():
            time.sleep(0.01)
        got = read_all(0)
        if CANONICAL:                          # its lines are read: then the unfinished one
            attrs[3] &= ~termios.ICANON
            termios.tcsetattr(0, termios.TCSANOW, attrs)
            got += b"|" + read_all(0)
        os.write(answer_w, struct.pack("I", len(got)) + got)
        os._exit(0)
    os.read(answer_r, 1)                      # the child's settings are made, its output written
    os.write(master, INPUT)
    settle(master)                            # the echo of the input is there too
    os.write(settled_w, b"s")
    if go is not ALWAYS:
        out.write("waiting\n")
    while not go():
        time.sleep(0.01)
    from_master = read_all(master)
    size = struct.unpack("I", os.read(answer_r, 4))[0]
    from_slave = b""
    while len(from_slave) < size:
        from_slave += os.read(answer_r, size - len(from_slave))
    os.waitpid(pid, 0)
    os.close(master)
    return from_master, from_slave


def ALWAYS():
    return True


out = open(sys.argv[1], "w", buffering=1)
expected_output, expected_input = exchange(ALWAYS)
output, input_ = exchange(lambda: os.path.exists(sys.argv[2]))
for name, got, expected in (("output", output, expected_output), ("input", input_, expected_input)):
    out.write(f"{name} ok\n" if got == expected else f"BAD {name}: {got!r} != {expected!r}\n")
