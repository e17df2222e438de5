"""The end that every in-process file system scenario (a script run by run_scenario, in a
process of its own) shares. A module of its own: the scenarios import it with only their
own directory on the path."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio


async def unmount_scenario(mountpoint: Path) -> None:
    """A scenario's own unmount of the mount it serves, from a worker thread (never from
    the thread that serves it), which ends its serve task."""
    await trio.to_thread.run_sync(lambda: subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True))


def finish_scenario(fs, store, scenario, results: dict) -> None:
    """The end every in-process scenario shares: run `scenario` (an async function that
    serves `fs` and unmounts it: unmount_scenario) in trio, close the file system, then
    the store, and print `results` as JSON for run_scenario."""
    try:
        trio.run(scenario)
        fs.close()
    finally:
        store.close()
    print(json.dumps(results))
