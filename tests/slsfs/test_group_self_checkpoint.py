"""An application that checkpoints itself (`sls checkpoint` run inside its group, as a
program calls a checkpoint API) and is later restored from that very checkpoint: in the
restored instance the call returns success too, as it did in the first (Aurora's API
returns in both), instead of failing on a connection to a daemon that is gone."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from group_helpers import wait_for
from mount.control import request

TARGETS = Path(__file__).parent / "targets"


def checkpointed(store) -> tuple[int, str] | None:
    try:
        status, output = (store.mnt / "checkpointed").read_text().split(" ", 1)
    except (OSError, ValueError):
        return None
    return int(status), output


def test_a_group_restored_from_its_own_checkpoint_sees_its_checkpoint_call_succeed(group_store):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "selfie", "--hz", "5", "--",
              sys.executable, str(TARGETS / "self_checkpointer.py"), str(store.path), "selfie")
    status, output = wait_for(lambda: checkpointed(store), "the application's own checkpoint")
    assert status == 0, output
    first = json.loads(output)
    assert first["group"] == "selfie" and first["checkpoint"] and not first.get("restored")

    store.crash()
    store.sls("restore", "selfie", "--store", str(store.path), "--at", "mine")
    status, output = wait_for(lambda: checkpointed(store), "the restored application's checkpoint call to return")
    assert status == 0, f"restored from its own checkpoint, the application's `sls checkpoint` failed: {output}"
    again = json.loads(output)
    assert again["restored"] and again["group"] == "selfie" and again["name"] == "mine"
    resolved = request(store.path, "resolve_group", group="selfie", at=f"selfie#{again['number']}")
    assert resolved["checkpoint"] == first["checkpoint"] == store.group("selfie")["restored_from"]
