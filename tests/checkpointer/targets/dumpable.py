"""A process that sets its dumpable flag (prctl PR_SET_DUMPABLE) as real programs do:
usage `dumpable.py OUTFILE user|secret`, run in a scratch directory that uid 65534 may
write. "user": drops root for uid/gid 65534 (the kernel clears the flag at that change)
and sets it again, as nginx's workers do so that they can dump core and their owner can
read /proc/PID and ptrace them; "secret": stays root and clears it, as ssh-agent and
gpg-agent do so that their keys are never in a core file. Writes "ready dumpable=N", then
waits for a file "read-now" (removes it) and writes "read ok" if PR_GET_DUMPABLE still
answers the value it set, else "BAD ..."."""
import ctypes
import os
import sys
import time

PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
libc = ctypes.CDLL(None, use_errno=True)
out = open(sys.argv[1], "w", buffering=1)
if sys.argv[2] == "user":
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    wanted = 1
else:
    wanted = 0
if libc.prctl(PR_SET_DUMPABLE, wanted, 0, 0, 0) != 0:
    out.write(f"BAD PR_SET_DUMPABLE: errno {ctypes.get_errno()}\n")
    sys.exit(1)
out.write(f"ready dumpable={libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)}\n")
while not os.path.exists("read-now"):
    time.sleep(0.005)
os.unlink("read-now")
value = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
out.write("read ok\n" if value == wanted else f"BAD PR_GET_DUMPABLE is {value}, not {wanted}\n")
time.sleep(600)
