"""`make demo`: the whole product on a running application, in ./demo/.

A small Python program keeps a counter in memory and appends numbered lines to a
journal file. The demo runs it under `sls run` (files and memory checkpointed together
10 times a second), SIGKILLs the program AND the slsfs daemon, restores it with
`sls restore`, shows it continuing with the same PID and counter, browses
`.sls/checkpoints/`, diffs two checkpoints and starts two clones of a named checkpoint.
Every step runs the real `sls` command and prints it first, so the output doubles as a
tutorial. Simplification: the demo lives in ./demo/ and removes what it started there.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

APP = '''\
import os, time
n = 0                                        # the state that lives only in memory
with open("journal.txt", "a") as journal:   # and the file it writes, in the slsfs mount
    while True:
        n += 1
        journal.write(f"entry {n:4d}   pid {os.getpid()}   {time.strftime('%H:%M:%S')}\\n")
        journal.flush()
        time.sleep(0.1)
'''


def say(text: str = "") -> None:
    print(text, flush=True)


def sls(*args: str, show: bool = True) -> str:
    if show:
        say(f"$ sls {' '.join(args)}")
    result = subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"demo: `sls {' '.join(args)}` failed: {result.stderr.strip()}")
    if show and result.stdout.strip():
        say("  " + result.stdout.strip().replace("\n", "\n  "))
    return result.stdout


def tail(path: Path, n: int = 3) -> None:
    for line in path.read_text().splitlines()[-n:]:
        say(f"    {line}")


def wait_lines(path: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: {path} did not reach {count} lines in {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    base = Path((argv or sys.argv[1:] or ["demo"])[0]).resolve()
    store, mnt = base / "store", base / "store.mnt"
    if store.exists() and (store / "control.sock").exists():
        subprocess.run([sys.executable, "-m", "slsfs.cli", "stop", "--store", str(store)], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    (base / "app.py").write_text(APP)
    journal = mnt / "journal.txt"
    try:
        say("== 1. An application in a persistence group")
        say(f"The app ({base / 'app.py'}) counts in memory and appends one line per count to journal.txt.")
        sls("init", str(store))
        sls("run", "--store", str(store), "--name", "journal", "--hz", "10", "--", sys.executable,
            str(base / "app.py"))
        wait_lines(journal, 20)
        say(f"{journal} after 2 seconds:")
        tail(journal)
        sls("ps", "--store", str(store))
        sls("checkpoint", "journal", "--store", str(store), "--name", "before-crash")
        wait_lines(journal, 40)

        say()
        say("== 2. Crash: SIGKILL the application AND the slsfs daemon")
        status = json.loads(sls("ps", "--store", str(store), "--json", show=False))
        app_pid, daemon_pid = status["groups"][0]["pids"][0], status["daemon"]
        os.kill(app_pid, signal.SIGKILL)
        time.sleep(0.05)
        lines = journal.read_text().splitlines()        # as the application left it
        os.kill(daemon_pid, signal.SIGKILL)
        say(f"killed app pid {app_pid} and daemon pid {daemon_pid}; the journal had {len(lines)} lines, "
            f"the last: {lines[-1]}")
        time.sleep(0.5)
        say("    (the mount is gone with its daemon: " + _probe(journal) + ")")

        say()
        say("== 3. Restore: memory and files come back from the same checkpoint")
        sls("restore", "journal", "--store", str(store))
        origin = json.loads(sls("ps", "--store", str(store), "--json", show=False))["groups"][0]["restored_from"]
        restored = len((mnt / ".sls" / "checkpoints" / str(origin) / "fs" / journal.name).read_text().splitlines())
        wait_lines(journal, restored + 15)
        say(f"the journal came back with {restored} lines, as the newest durable checkpoint ({origin}) holds it "
            "(lines written after it were rolled back with the memory that wrote them), and goes on, "
            "same PID (inside its PID namespace), counter continuing:")
        tail(journal, 4)

        say()
        say("== 4. History: every checkpoint is browsable as files")
        checkpoints = sorted(int(p) for p in os.listdir(mnt / ".sls" / "checkpoints"))
        say(f"$ ls {mnt}/.sls/checkpoints | wc -l   ->  {len(checkpoints)} checkpoints, "
            f"{checkpoints[0]} .. {checkpoints[-1]}")
        latest = mnt / ".sls" / "checkpoints" / str(checkpoints[-1])
        say(f"$ ls {latest}  ->  {' '.join(sorted(os.listdir(latest)))}")
        procs = latest / "procs" / "1"
        if procs.exists():
            say(f"$ ls {procs}  ->  {' '.join(sorted(os.listdir(procs)))}   (core opens in gdb)")
            doc = json.loads((procs / "status.json").read_text())
            say(f"    status.json: pid {doc['pid']}, comm {doc['comm']!r}, cwd {doc['cwd']}, "
                f"{len(doc['threads'])} thread(s), {len(doc['fds'])} open fds")
        older = checkpoints[max(0, len(checkpoints) - 30)]
        say(f"journal.txt as of checkpoint {older} vs {checkpoints[-1]}:")
        a = (mnt / ".sls" / "checkpoints" / str(older) / "fs" / "journal.txt").read_text().splitlines()
        b = (latest / "fs" / "journal.txt").read_text().splitlines()
        say(f"    {len(a)} lines vs {len(b)} lines")
        sls("diff", "--mount", str(mnt), str(older), str(checkpoints[-1]))

        say()
        say("== 5. Clones: two independent copies of the checkpoint named 'before-crash', O(1) each,")
        say("      each a group of its own, checkpointed with the original (a crash brings all three back)")
        out = json.loads(sls("restore", "journal", "--store", str(store), "--at", "before-crash", "--clone",
                             "--count", "2", "--json", show=False))
        say(f"$ sls restore journal --store {store} --at before-crash --clone --count 2")
        for clone in out["clones"]:
            say(f"  {clone['group']}: pid {clone['pids'][0]} in {clone['directory']} "
                f"(first checkpoint {clone['checkpoint']})")
        time.sleep(1.5)
        for clone in out["clones"]:
            say(f"{clone['directory']}/journal.txt goes on from 'before-crash' on its own:")
            tail(Path(clone["directory"]) / "journal.txt", 2)
        sls("ps", "--store", str(store))
    finally:
        say()
        subprocess.run([sys.executable, "-m", "slsfs.cli", "stop", "--store", str(store)], capture_output=True)
        say(f"== stopped everything (sls stop --store {store}); the store keeps every durable checkpoint")
    return 0


def _probe(path: Path) -> str:
    try:
        path.stat()
        return "still reachable"
    except OSError as exc:
        return exc.strerror or str(exc)


if __name__ == "__main__":
    sys.exit(main())
