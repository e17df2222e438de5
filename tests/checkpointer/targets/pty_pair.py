"""A pseudo-terminal pair: `pty_pair.py OUTFILE`. The parent (pty.fork) holds the master;
the child is a session leader whose controlling terminal is the slave (its fds 0-2), and
it starts a grandchild in a process group of its own that it puts in the foreground (as
a shell runs a job). The parent sets the window to 33x77 rows/cols, echo off and the
slave's owner to 4321:4321 mode 620 (as grantpt does for a user), then every 5 ms writes
"ping <n>" to the master and expects "pong <n> 33x77 fg tty noecho 4321:4321:620": the
grandchild checks its terminal (window size, its group in the foreground, /dev/tty opens,
echo off, owner and mode) and answers through /dev/tty (opened once, held). A ping whose answer does not come within 2 s is sent again
(a ping waiting for the job, which reads whole lines, is not kept by a restore). The parent appends "<n> <pid> ok"."""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

out = open(sys.argv[1], "w", buffering=1)
pid, master = pty.fork()
if pid == 0:
    job = os.fork()
    if job:
        os.setpgid(job, job)
        os.tcsetpgrp(0, job)
        os.waitpid(job, 0)
        sys.exit(0)
    os.setpgid(0, 0)
    while os.tcgetpgrp(0) != os.getpgrp():
        time.sleep(0.001)
    terminal = os.open("/dev/tty", os.O_WRONLY)     # held: it must stay the terminal across a restore
    while True:
        line = sys.stdin.readline()
        rows, cols = struct.unpack("hh", fcntl.ioctl(0, termios.TIOCGWINSZ, bytes(4)))
        try:
            fg = "fg" if os.tcgetpgrp(0) == os.getpgrp() else "bg"
        except OSError:
            fg = "noctty"
        try:
            os.close(os.open("/dev/tty", os.O_RDWR))
            ctty = "tty"
        except OSError:
            ctty = "nottty"
        echo = "echo" if termios.tcgetattr(0)[3] & termios.ECHO else "noecho"
        st = os.fstat(0)
        owner = f"{st.st_uid}:{st.st_gid}:{st.st_mode & 0o777:o}"
        os.write(terminal, f"pong {line.split()[1]} {rows}x{cols} {fg} {ctty} {echo} {owner}\n".encode())

fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("hhhh", 33, 77, 0, 0))
attrs = termios.tcgetattr(master)
attrs[3] &= ~termios.ECHO
termios.tcsetattr(master, termios.TCSANOW, attrs)
TIOCGPTN = 0x80045430
slave = f"/dev/pts/{struct.unpack('I', fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]}"
os.chown(slave, 4321, 4321)
os.chmod(slave, 0o620)
n, me, pending = 0, os.getpid(), b""
while True:
    n += 1
    expected = f"pong {n} 33x77 fg tty noecho 4321:4321:620"
    os.write(master, f"ping {n}\n".encode())
    sent = time.monotonic()
    while True:
        if b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            line = line.decode().strip()
            if line == expected:
                break
            if line.startswith(f"pong {n} "):
                out.write(f"BAD the terminal answered {line!r}, not {expected!r}\n")
                sys.exit(1)
            continue                                # an answer to an earlier ping sent twice
        if not select.select([master], [], [], 0.1)[0]:
            if time.monotonic() - sent > 2:
                os.write(master, f"ping {n}\n".encode())
                sent = time.monotonic()
            continue
        pending += os.read(master, 4096)
    out.write(f"{n:08d} {me:7d} ok\n")
    time.sleep(0.005)
