"""A process whose main thread refuses one system call with a seccomp filter:
`seccomp_refuser.py OUTFILE NR ACTION [thread]`. The filter returns ACTION (a seccomp
return value, e.g. 0x50001: ERRNO(EPERM), 0x30000: TRAP) for system call NR and allows
every other; with `thread`, a worker thread started first runs without it. Then it
appends "ok <n>" lines to OUTFILE every 10 ms."""
import ctypes
import struct
import sys
import threading
import time

out, nr, action = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0)
if sys.argv[4:] == ["thread"]:
    threading.Thread(target=lambda: [time.sleep(0.01) for _ in iter(int, 1)], daemon=True).start()
libc = ctypes.CDLL(None, use_errno=True)


def insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


program = ctypes.create_string_buffer(insn(0x20, 0, 0, 0) + insn(0x15, 0, 1, nr)     # nr == NR?
                                      + insn(0x06, 0, 0, action) + insn(0x06, 0, 0, 0x7fff0000))  # ACTION : allow
fprog = ctypes.create_string_buffer(struct.pack("<H6xQ", 4, ctypes.addressof(program)))
ul = ctypes.c_ulong
assert libc.prctl(38, ul(1), ul(0), ul(0), ul(0)) == 0                       # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, ul(2), ul(ctypes.addressof(fprog)), ul(0), ul(0)) == 0  # PR_SET_SECCOMP, filter
n = 0
while True:
    n += 1
    with open(out, "a") as f:
        f.write(f"ok {n}\n")
    time.sleep(0.01)
