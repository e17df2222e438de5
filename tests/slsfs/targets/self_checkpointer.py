"""An application that checkpoints its own group, as a program calls a checkpoint API:
`self_checkpointer.py STORE GROUP`, run by `sls run` (its working directory the volume).

It counts in memory and in the file `count`; at 20 it runs `sls checkpoint GROUP --store
STORE --name mine --json` and writes that command's exit status and output to the file
`checkpointed` ("<status> <one line of JSON>"), then counts on. Restored from the
checkpoint named "mine" (taken while that command waited), the command must finish in
the restored instance as it did in the first: the file is written again from there."""
import os
import subprocess
import sys
import time

store, group = sys.argv[1], sys.argv[2]


def write(name: str, text: str) -> None:
    with open(name + ".tmp", "w") as f:
        f.write(text)
    os.rename(name + ".tmp", name)


count = 0
while True:
    count += 1
    write("count", str(count))
    if count == 20:
        done = subprocess.run([sys.executable, "-m", "slsfs.cli", "checkpoint", group, "--store", store,
                               "--name", "mine", "--json"], capture_output=True, text=True)
        output = (done.stdout or done.stderr).replace("\n", " ").strip()
        write("checkpointed", f"{done.returncode} {output}\n")
    time.sleep(0.02)
