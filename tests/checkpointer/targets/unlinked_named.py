"""A file opened and unlinked, its directory still there: `unlinked_named.py OUTFILE`, run
in a scratch directory. It writes "ready", then waits for a file "read-now" (removes it):
/proc/self/fd must name the file "<its path> (deleted)" as before (zdtm
unlink_multiple_largefiles compares the names), its bytes and offset must be as they were,
and the name must stay gone. Then "read ok", or "BAD ..."."""
import os
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
fd = os.open("scratch.data", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
os.write(fd, b"unlinked but open\n")
os.unlink("scratch.data")
before = os.readlink(f"/proc/self/fd/{fd}")
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
name, offset = os.readlink(f"/proc/self/fd/{fd}"), os.lseek(fd, 0, os.SEEK_CUR)
if name != before or offset != 18 or os.pread(fd, 100, 0) != b"unlinked but open\n" or os.path.exists("scratch.data"):
    out.write(f"BAD named {name!r} (was {before!r}), offset {offset}, or the name came back\n")
    sys.exit(1)
out.write("read ok\n")
time.sleep(600)
