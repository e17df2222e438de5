"""`sls retention`: shows a store's retention policy and changes it, on a live mount (whose
next thinning applies it) or on a store no daemon holds."""
from __future__ import annotations

import json

from mount_helpers import sls
from polling import wait_for


def _unnamed_checkpoints(mnt) -> list[int]:
    return [c["id"] for c in json.loads(sls("log", mnt.path, "--json").stdout)["checkpoints"] if not c["tags"]]


def test_a_mount_thins_its_history_by_a_policy_set_while_it_runs(mnt):
    shown = sls("retention", mnt.path).stdout
    assert "keeps the newest 100 checkpoints, then one a minute for 60 minutes" in shown, shown
    sls("retention", mnt.path, "--keep-last", "3", "--minutely", "0", "--hourly", "0", "--daily", "0")
    for i in range(8):
        (mnt.path / f"f{i}").write_text(str(i))
        sls("checkpoint", mnt.path)
    named = json.loads(sls("checkpoint", mnt.path, "--name", "keep", "--json").stdout)["checkpoint"]
    wait_for(lambda: len(_unnamed_checkpoints(mnt)) <= 3, "the mount to thin its history to 3", timeout=30)
    kept = {c["id"]: c["tags"] for c in json.loads(sls("log", mnt.path, "--json").stdout)["checkpoints"]}
    assert kept[named] == ["keep"], kept
    mnt.umount()
    assert json.loads(sls("retention", mnt.store, "--json").stdout)["policy"] == {
        "keep_last": 3, "minutely": 0, "hourly": 0, "daily": 0}


def test_a_bad_setting_is_refused_with_the_reason(mnt):
    for store_or_mount in (mnt.path, mnt.store):
        refused = sls("retention", store_or_mount, "--keep-last", "-1", check=False)
        assert refused.returncode == 1 and "keep-last must be a whole number >= 0" in refused.stderr, refused
        if store_or_mount == mnt.path:
            mnt.umount()          # the store, with no daemon: the command opens it itself
    assert "keeps the newest 100 checkpoints" in sls("retention", mnt.store).stdout
