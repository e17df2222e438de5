"""Group checkpoint records (`grp/<name>` in the store, docs/FORMAT.md "Persistence groups"):
what a restore reads back, old versions included."""
from __future__ import annotations

import json

import pytest

from objectstore import Store

from slsfs import groups
from slsfs.groups import GroupCheckpoint, GroupError, GroupSettings


def test_a_record_keeps_the_clones_grafted_into_its_files(tmp_path):
    with Store.init(tmp_path / "store") as store:
        store.create_volume("main")
        clone = store.create_volume("main.app.clone1")
        clone.put(b"counter", b"7")
        files = store.commit("group app.clone1 #1: files")
        settings = GroupSettings("app.clone1", "main", "/mnt/app.clone1", 10, ["app"], directory="app.clone1")
        record = GroupCheckpoint(settings, 1, files.time, store.put(b"image"), files.roots["vol/main"], [1],
                                 files.id, {"main.app.clone1": files.roots["vol/main.app.clone1"]})
        groups.save(store, record)
        store.commit("group app.clone1 #1")
        assert groups.load(store, "app.clone1") == record
        assert settings.mount_root() == "/mnt" and settings.in_mount("/elsewhere") == "/elsewhere/app.clone1"


def test_records_of_older_versions_are_read_with_the_defaults_of_their_time():
    version_2 = {"format": "slsfs-group", "version": 2, "seq": 3, "time": 1.5, "image": "00" * 16,
                 "fs": "11" * 16, "pids": [1], "files_commit": 9,
                 "settings": {"name": "app", "volume": "main", "mountpoint": "/mnt", "hz": 10.0,
                              "argv": ["app"], "mode": "cwd", "output": "", "init": True}}
    record = GroupCheckpoint.decode(json.dumps(version_2).encode())
    assert record.settings.directory == "" and record.clone_volumes == {}
    assert record.settings.mount_root() == "/mnt"
    with pytest.raises(GroupError, match="upgrade slsfs"):
        GroupCheckpoint.decode(json.dumps({**version_2, "version": groups.VERSION + 1}).encode())
