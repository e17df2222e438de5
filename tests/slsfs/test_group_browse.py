"""A checkpoint of a running group that a user is browsing under `.sls/checkpoints/<id>/`
(a shell there, a file of it open) stays while the group daemon's retention and GC run
again and again (FileSystem.kept_beyond_policy in the group daemon too): it does not
vanish under the reader, and reads back what it held."""
from __future__ import annotations

import json
import subprocess

from mount.control import request

from group_helpers import wait_for


def newest(store) -> int:
    return request(store.path, "log")["log"][0]["id"]


def test_a_browsed_checkpoint_of_a_running_group_outlives_its_retention_and_gc(group_store, group_binaries):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "app", "--hz", "50", "--",
              str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: store.group("app")["checkpoints"] > 5, "a few group checkpoints")
    browsed = store.group("app")["last_durable"]
    where = store.mnt / ".sls" / "checkpoints" / str(browsed)
    shell = subprocess.Popen(["sh", "-c", "ls >/dev/null; exec sleep 600"], cwd=where)    # a user's shell there
    held = open(where / "fs" / "counter")                                                 # and a file of it open
    try:
        counted = held.read()
        for passes in range(1, 4):         # the daemon's retention runs every 5 s, `sls gc` here
            wait_for(lambda: newest(store) > browsed + 150 * passes, "150 more commits (the policy keeps 100)",
                     timeout=120)
            store.sls("gc", str(store.path))                            # through the daemon
        log = {c["id"] for c in request(store.path, "log")["log"]}
        assert browsed in log, "the browsed checkpoint was thinned"
        assert set(range(1, browsed)) - log and min(log) < browsed < sorted(log)[2], \
            "retention thinned what lay around it (its files commit stays)"
        held.seek(0)
        assert held.read() == counted
        cat = subprocess.run(["sh", "-c", "cat fs/counter; ls procs"], cwd=where, capture_output=True, text=True)
        assert cat.returncode == 0 and cat.stdout.startswith(counted), cat
        info = json.loads((where / "info.json").read_text())
        assert info["id"] == browsed
    finally:
        held.close()
        shell.kill()
        shell.wait()
    store.sls("stop", "--store", str(store.path))
