"""A Python interpreter with live objects that checks itself: `live_objects.py OUTFILE`.

Every 5 ms it advances a generator, a class instance, a dict and a list together and
appends one fixed-width line "<n> <pid> <digest> ok"; the invariants tie them to n, so a
restored interpreter that lost or mangled any of them writes BAD and exits 1. SIGUSR1
appends "usr1 <n>" from a Python signal handler (handlers must survive a restore).
"""
import hashlib
import os
import signal
import sys
import time


class Account:
    def __init__(self):
        self.balance = 0
        self.history = []

    def deposit(self, amount):
        self.balance += amount
        self.history.append(amount)


def numbers():
    n = 0
    while True:
        n += 1
        yield n


out = open(sys.argv[1], "w", buffering=1)
signal.signal(signal.SIGUSR1, lambda *_: out.write(f"usr1 {account.balance:08d}\n"))
pid = os.getpid()
gen, account, squares, digest = numbers(), Account(), {}, hashlib.sha256()
while True:
    n = next(gen)
    account.deposit(1)
    squares[n] = n * n
    digest.update(str(n).encode())
    ok = (account.balance == n == len(account.history) == len(squares) and squares[n] == n * n
          and sum(account.history) == n and os.getpid() == pid)
    if not ok:
        out.write(f"BAD state at {n}\n")
        sys.exit(1)
    out.write(f"{n:08d} {pid:7d} {digest.hexdigest()[:8]} ok\n")
    time.sleep(0.005)
