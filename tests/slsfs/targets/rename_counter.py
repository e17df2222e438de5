"""The seal-order target (tests/slsfs/test_group_seal.py): a counter kept two ways in the cwd.

Each step i writes i into `count` (a pwrite: with the writeback cache the kernel holds it
until a syncfs brings it in) and then renames `at.<i-1>` to `at.<i>` (a request the daemon
answers at once). At every instant the name is the count or one behind it, never ahead:
a files commit that shows a name ahead of its count holds a rename made after the instant
whose writes it holds."""
import os

open("at.0", "w").close()          # first: a files commit between the two holds no count (the test skips it)
fd = os.open("count", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
i = 0
while True:
    i += 1
    os.pwrite(fd, b"%020d" % i, 0)
    os.rename(f"at.{i - 1}", f"at.{i}")
