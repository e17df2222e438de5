"""A file kept open after its temporary directory was cleaned up (the file unlinked, the
directory removed; tempfile.TemporaryDirectory's cleanup while a file in it is still in use):
`removed_tmpdir.py OUTFILE`, run in a scratch directory. It writes "ready", then waits for
a file "read-now" (removes it): the file must still read what was written, at the same
offset, and take more. Then "read ok", or "BAD ..."."""
import os
import sys
import time

out = open(sys.argv[1], "w", buffering=1)
os.makedirs("work.d/inner")
fd = os.open("work.d/inner/state.bin", os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"kept after its directory went")
os.unlink("work.d/inner/state.bin")
os.rmdir("work.d/inner")
os.rmdir("work.d")
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
position = os.lseek(fd, 0, os.SEEK_CUR)
os.write(fd, b", and more")
data = os.pread(fd, 100, 0)
if position != 29 or data != b"kept after its directory went, and more":
    out.write(f"BAD position {position}, contents {data!r}\n")
    sys.exit(1)
out.write("read ok\n")
time.sleep(600)
