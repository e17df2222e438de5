"""A device node made by the program, opened and unlinked (a sandbox's private /dev/null):
`unlinked_device.py OUTFILE`, run in a scratch directory. It writes "ready", then waits for
a file "read-now" (removes it): the fd must still be that device (a character device 1:3,
mode 0600), take writes and read EOF, and the name must stay gone. Then "read ok", or
"BAD ..."."""
import os
import stat
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
os.mknod("null.dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
fd = os.open("null.dev", os.O_RDWR)
os.unlink("null.dev")
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
st = os.fstat(fd)
if (st.st_mode, os.major(st.st_rdev), os.minor(st.st_rdev)) != (stat.S_IFCHR | 0o600, 1, 3):
    out.write(f"BAD mode {st.st_mode:o}, device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}\n")
    sys.exit(1)
if os.write(fd, b"gone") != 4 or os.read(fd, 10) != b"" or os.path.exists("null.dev"):
    out.write("BAD it does not behave as /dev/null, or its name came back\n")
    sys.exit(1)
out.write("read ok\n")
time.sleep(600)
