"""A process holding a POSIX message queue (mq_open) with a message in it:
`message_queue.py OUTFILE NAME`. Writes "<n> <pid> ok" every 5 ms; unlinks the queue when
it gets SIGTERM."""
import ctypes
import os
import signal
import sys
import time

librt = ctypes.CDLL("librt.so.1", use_errno=True)
librt.mq_open.restype = ctypes.c_int
librt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
name = sys.argv[2].encode()
attr = (ctypes.c_long * 8)(0, 4, 64, 0)     # struct mq_attr: flags, maxmsg, msgsize, curmsgs (not the
queue = librt.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, attr)   # host's defaults, which tests change)
if queue < 0:
    raise SystemExit(f"mq_open: {os.strerror(ctypes.get_errno())}")
librt.mq_send(queue, b"waiting", 7, 0)
signal.signal(signal.SIGTERM, lambda *_: (librt.mq_unlink(name), sys.exit(0)))
out = open(sys.argv[1], "w", buffering=1)
n, pid = 0, os.getpid()
while True:
    n += 1
    out.write(f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
