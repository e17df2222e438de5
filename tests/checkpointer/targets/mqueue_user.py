"""A process using POSIX message queues: `mqueue_user.py OUTFILE NAME`. Opens NAME
(O_RDWR, mode 0640, 6 messages of up to 64 bytes) and queues "a" (priority 1), "b" (5),
"c" (1); opens it again O_WRONLY|O_NONBLOCK; opens NAME-gone, queues "gone" and unlinks
it. Writes "ready" to OUTFILE, waits until OUTFILE.go exists, then takes every message
from NAME (in the order the kernel gives them), sends "x" through the second descriptor
and takes it back, takes NAME-gone's message, and writes one line: the messages,
"nonblock" if the second descriptor still has O_NONBLOCK, the first's mq_maxmsg and
mq_msgsize. Unlinks NAME on SIGTERM."""
import ctypes
import os
import signal
import sys
import time

librt = ctypes.CDLL("librt.so.1", use_errno=True)
librt.mq_open.restype = ctypes.c_int
librt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
librt.mq_receive.restype = ctypes.c_ssize_t
Attr = ctypes.c_long * 8        # struct mq_attr: flags, maxmsg, msgsize, curmsgs (and reserved)


def opened(name: bytes, flags: int) -> int:
    queue = librt.mq_open(name, flags, 0o640, Attr(0, 6, 64, 0))
    if queue < 0:
        raise SystemExit(f"mq_open: {os.strerror(ctypes.get_errno())}")
    return queue


def receive(queue: int) -> str:
    buffer, priority = ctypes.create_string_buffer(64), ctypes.c_uint()
    length = librt.mq_receive(queue, buffer, 64, ctypes.byref(priority))
    if length < 0:
        raise SystemExit(f"mq_receive: {os.strerror(ctypes.get_errno())}")
    return f"{buffer.raw[:length].decode()}{priority.value}"


def attributes(queue: int) -> Attr:
    attr = Attr()
    librt.mq_getattr(queue, attr)
    return attr


name, out = sys.argv[2].encode(), sys.argv[1]
main = opened(name, os.O_CREAT | os.O_RDWR)
for message, priority in ((b"a", 1), (b"b", 5), (b"c", 1)):
    librt.mq_send(main, message, len(message), priority)
writer = opened(name, os.O_WRONLY | os.O_NONBLOCK)
gone = opened(name + b"-gone", os.O_CREAT | os.O_RDWR)
librt.mq_send(gone, b"gone", 4, 2)
librt.mq_unlink(name + b"-gone")
signal.signal(signal.SIGTERM, lambda *_: (librt.mq_unlink(name), sys.exit(0)))
with open(out, "w") as f:
    f.write("ready\n")
while not os.path.exists(out + ".go"):
    time.sleep(0.01)
taken = [receive(main) for _ in range(attributes(main)[3])]
librt.mq_send(writer, b"x", 1, 3)
taken += [receive(main), receive(gone)]
main_attr = attributes(main)
line = f"{' '.join(taken)} {'nonblock' if attributes(writer)[0] & os.O_NONBLOCK else 'blocking'} " \
       f"{main_attr[1]} {main_attr[2]}\n"
with open(out, "a") as f:
    f.write(line)
while True:
    time.sleep(1)
