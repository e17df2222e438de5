"""Appends numbered lines to a log it names by absolute path, as programs that keep
absolute paths do (a target): SQLite its journal's, Redis its dump file's, most programs
their logs'.

The path of argv[1] in the working directory is made absolute once, at start; then every
10 ms the program opens that path, appends "<n> <its working directory>" and closes it.
A copy restored elsewhere must find its own log there, and its working directory
where it was."""
import os
import sys
import time

log = os.path.abspath(sys.argv[1])
written = 0
while True:
    written += 1
    with open(log, "a") as f:
        f.write(f"{written} {os.getcwd()}\n")
    time.sleep(0.01)
