"""A file watcher with events waiting in its inotify queue at the checkpoint:
`inotify_queued.py OUTFILE`, run in a scratch directory.

It watches the directory "watched" for IN_CREATE, creates watched/early (its event waits
unread), writes "ready" and waits for a file "read-now" (removes it). Then it creates
watched/late and reads its instance (blocking) until late's event comes. A restore cannot
bring early's event back (the kernel gives no way to read a queue without emptying it);
it must tell the program that events were lost, as the kernel does: IN_Q_OVERFLOW (wd -1)
first, then late's IN_CREATE. It adds one more watch, whose number must be 2, the next one.
Then "read ok", or "BAD ..."."""
import ctypes
import os
import select
import struct
import sys
import time

IN_CREATE, IN_Q_OVERFLOW = 0x100, 0x4000
libc = ctypes.CDLL(None, use_errno=True)
out = open(sys.argv[1], "w", buffering=1)
os.mkdir("watched")
watcher = libc.inotify_init1(0)
watched_wd = libc.inotify_add_watch(watcher, b"watched", IN_CREATE)
open("watched/early", "w").close()
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
open("watched/late", "w").close()
seen = []
while (watched_wd, IN_CREATE, "late") not in seen:
    if not select.select([watcher], [], [], 20)[0]:
        break
    data = os.read(watcher, 4096)
    at = 0
    while at < len(data):
        wd, mask, _, length = struct.unpack_from("iIII", data, at)
        seen.append((wd, mask, data[at + 16:at + 16 + length].rstrip(b"\0").decode()))
        at += 16 + length
wanted = [(-1, IN_Q_OVERFLOW, ""), (watched_wd, IN_CREATE, "late")]
next_wd = libc.inotify_add_watch(watcher, b".", IN_CREATE)
out.write("read ok\n" if seen == wanted and next_wd == watched_wd + 1
          else f"BAD events {seen}, wanted {wanted}; next watch {next_wd}, wanted {watched_wd + 1}\n")
time.sleep(600)
