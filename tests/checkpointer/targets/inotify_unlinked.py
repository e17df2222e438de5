"""A file watcher whose watched file is unlinked while it still writes it (a log rotated
away under `tail -f`): `inotify_unlinked.py OUTFILE`, run in a scratch directory.

It watches the directory for IN_CREATE and app.log for IN_MODIFY, keeps app.log open for
writing and unlinks it, then writes "ready" and waits for a file "read-now" (removes it):
it writes a line to the unlinked app.log and creates new.log, and must get, from the same
inotify fd, IN_MODIFY under app.log's watch descriptor and IN_CREATE of new.log under the
directory's. Then "read ok", or "BAD ..."."""
import ctypes
import os
import select
import struct
import sys
import time

IN_MODIFY, IN_CREATE, IN_NONBLOCK = 0x2, 0x100, 0o4000
libc = ctypes.CDLL(None, use_errno=True)
out = open(sys.argv[1], "w", buffering=1)
watcher = libc.inotify_init1(IN_NONBLOCK)
directory_wd = libc.inotify_add_watch(watcher, b".", IN_CREATE)
log = os.open("app.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
log_wd = libc.inotify_add_watch(watcher, b"app.log", IN_MODIFY)
os.unlink("app.log")
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
os.write(log, b"a line\n")
os.close(os.open("new.log", os.O_WRONLY | os.O_CREAT, 0o644))
wanted = {(log_wd, IN_MODIFY, ""), (directory_wd, IN_CREATE, "new.log")}
seen = set()
deadline = time.monotonic() + 20
while not wanted <= seen and time.monotonic() < deadline:
    select.select([watcher], [], [], 0.1)
    try:
        data = os.read(watcher, 4096)
    except BlockingIOError:
        continue
    at = 0
    while at < len(data):
        wd, mask, _, length = struct.unpack_from("iIII", data, at)
        name = data[at + 16:at + 16 + length].rstrip(b"\0").decode()
        seen.add((wd, mask, name))
        at += 16 + length
out.write("read ok\n" if wanted <= seen else f"BAD events {sorted(seen)}, wanted {sorted(wanted)}\n")
time.sleep(600)
