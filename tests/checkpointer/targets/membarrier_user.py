"""Uses membarrier(2) as liburcu and the .NET runtime do: `membarrier_user.py OUTFILE`
registers for MEMBARRIER_CMD_PRIVATE_EXPEDITED (and its SYNC_CORE flavour), then every 5 ms
issues both barriers and writes "<n> <pid> ok", or BAD with the errno when one fails (an
unregistered process gets EPERM)."""
import ctypes
import os
import sys
import time

NR_MEMBARRIER = 324
PRIVATE_EXPEDITED, REGISTER_PRIVATE_EXPEDITED = 1 << 3, 1 << 4
SYNC_CORE, REGISTER_SYNC_CORE = 1 << 5, 1 << 6
libc = ctypes.CDLL(None, use_errno=True)


def membarrier(command: int) -> int:
    return 0 if libc.syscall(NR_MEMBARRIER, command, 0, 0) == 0 else ctypes.get_errno()


out = open(sys.argv[1], "w", buffering=1)
for command in (REGISTER_PRIVATE_EXPEDITED, REGISTER_SYNC_CORE):
    if membarrier(command):
        out.write(f"BAD cannot register {command:#x}\n")
n, pid = 0, os.getpid()
while True:
    failed = [(command, error) for command in (PRIVATE_EXPEDITED, SYNC_CORE) if (error := membarrier(command))]
    n += 1
    out.write(f"BAD membarrier {failed}\n" if failed else f"{n:08d} {pid:7d} ok\n")
    time.sleep(0.005)
