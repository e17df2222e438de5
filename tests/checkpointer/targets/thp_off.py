"""A process that turns transparent huge pages off for itself, as Redis does at start-up
(prctl PR_SET_THP_DISABLE): usage `thp_off.py OUTFILE`, run in a scratch directory. It
writes "ready", then waits for a file "read-now" (removes it) and writes "read ok" if
PR_GET_THP_DISABLE still answers 1, else "BAD ..."."""
import ctypes
import os
import sys
import time

PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42
libc = ctypes.CDLL(None, use_errno=True)
out = open(sys.argv[1], "w", buffering=1)
if libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
    out.write(f"BAD PR_SET_THP_DISABLE: errno {ctypes.get_errno()}\n")
    sys.exit(1)
out.write("ready\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
value = libc.prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)
out.write("read ok\n" if value == 1 else f"BAD PR_GET_THP_DISABLE is {value}, not 1\n")
time.sleep(600)
