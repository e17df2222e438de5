"""A store's retention policy is set in its FORMAT file, durably, and checked when set
and when read: `sls retention` changes it (objectstore.Store.set_retention)."""
from __future__ import annotations

import json

import pytest

from objectstore import FormatError, RetentionPolicy, Store


def test_a_changed_policy_is_kept_across_a_reopen(tmp_path):
    with Store.init(tmp_path / "s") as store:
        assert store.retention == RetentionPolicy()
        store.set_retention({"keep_last": 7, "daily": 0})
        assert store.retention == RetentionPolicy(keep_last=7, daily=0)
        store.set_retention({"hourly": 2})          # the other settings stay as they were
    with Store.open(tmp_path / "s", readonly=True) as store:
        assert store.retention == RetentionPolicy(keep_last=7, hourly=2, daily=0)
        assert store.retention_status() == {"policy": {"keep_last": 7, "minutely": 60, "hourly": 2, "daily": 0},
                                            "applied": {"keep_last": 7, "minutely": 60, "hourly": 2, "daily": 0},
                                            "space_pressure": 0}


@pytest.mark.parametrize("changes, says", [({"keep_last": -1}, "keep-last"), ({"hourly": -1}, "hourly"),
                                           ({"daily": "10"}, "whole number"), ({"weekly": 4}, "no retention setting weekly")])
def test_a_bad_setting_is_refused_and_changes_nothing(tmp_path, changes, says):
    with Store.init(tmp_path / "s") as store:
        store.set_retention({"keep_last": 9})
        before = (tmp_path / "s" / "FORMAT").read_bytes()
        with pytest.raises(ValueError, match=says):
            store.set_retention(changes)
        assert store.retention == RetentionPolicy(keep_last=9)
    assert (tmp_path / "s" / "FORMAT").read_bytes() == before


def test_a_damaged_policy_in_the_format_file_is_named_when_the_store_opens(tmp_path):
    Store.init(tmp_path / "s").close()
    meta = json.loads((tmp_path / "s" / "FORMAT").read_text())
    (tmp_path / "s" / "FORMAT").write_text(json.dumps({**meta, "retention": {"keep_last": -3}}))
    with pytest.raises(FormatError, match="retention policy is not valid.*keep-last"):
        Store.open(tmp_path / "s", readonly=True)
