"""Model-based test of a group's history: random sequences of group checkpoints, named
checkpoints, writes into the mount from outside, `sls gc` through the daemon, explicit
prunes, and a stop / unmounted `sls gc` / `sls restore` (the daemon's own retention runs
every 5 s beside). After each sequence, every checkpoint `sls log` lists for the group (its
own commits, its files commits, and the other commits carrying its record) and every name
restore with `restore --clone --at`: the clone (targets/atomic_counter.c) checks that its
memory and its file come from the same instant, and counts on; and fsck is clean.

The store keeps the newest 4 commits by policy (not 100), so that a few checkpoints are
enough for retention and GC to thin. Hypothesis picks the steps (derandomized: CI runs the
same sequences; SLSFS_GROUP_MODEL_EXAMPLES=N explores N random ones; no shrinking: each
step runs real processes).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from mount.control import request
from objectstore import Store
from slsfs import groups

from group_helpers import GroupStore, read_counter, wait_for

EXPLORE = os.environ.get("SLSFS_GROUP_MODEL_EXAMPLES")
EXAMPLES = int(EXPLORE or 3)
POLICY = {"keep_last": 4, "minutely": 0, "hourly": 0, "daily": 0}


class GroupHistory(RuleBasedStateMachine):
    """One store, one group `app` counting in memory and in the file `counter`."""

    binaries: Path

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="sls-history-model-"))
        self.store = GroupStore(self.tmp)
        self._set_policy(POLICY)
        self.store.sls("run", "--store", str(self.store.path), "--name", "app", "--hz", "0", "--",
                       str(self.binaries / "atomic_counter"), "counter")
        self._counting()

    def _counting(self) -> None:
        start = read_counter(self.store.mnt / "counter") or 0
        wait_for(lambda: (read_counter(self.store.mnt / "counter") or 0) > start, "the group to count")

    @rule()
    def checkpoint(self) -> None:
        request(self.store.path, "group_checkpoint", group="app")

    @rule(name=st.sampled_from(["warm", "cold"]))
    def named_checkpoint(self, name: str) -> None:
        request(self.store.path, "group_checkpoint", group="app", name=name)

    @rule(data=st.binary(max_size=5000))
    def write_from_outside(self, data: bytes) -> None:
        (self.store.mnt / "note").write_bytes(data)

    @rule()
    def gc(self) -> None:
        self.store.sls("gc", str(self.store.path))

    @rule()
    def prune(self) -> None:
        self.store.sls("gc", str(self.store.path), "--keep-last", "1")

    @rule()
    def reopen(self) -> None:
        self.store.sls("stop", "--store", str(self.store.path))
        self.store.sls("gc", str(self.store.path))            # unmounted: the CLI collects itself
        self.store.sls("restore", "app", "--store", str(self.store.path))
        assert not (self.store.mnt / "counter.bad").exists()
        self._counting()

    def teardown(self) -> None:
        try:
            self._everything_listed_restores()
        finally:
            self.store.cleanup()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _everything_listed_restores(self) -> None:
        self.store.sls("stop", "--store", str(self.store.path))
        fsck = self.store.sls("fsck", str(self.store.path), check=False)
        assert fsck.returncode == 0, fsck.stdout
        with Store.open(self.store.path, readonly=True) as store:
            listed = [str(c.id) for c in store.log() if groups.ROOT_PREFIX + "app" in c.roots
                      or groups.label_group(c.label) == "app"]
            listed += sorted(store.tags())
        assert listed
        self._set_policy({})             # the default (the newest 100): the clones' checkpoints thin nothing listed
        for at in listed:
            out = self.store.sls("restore", "app", "--store", str(self.store.path), "--clone", "--at", at).stdout
            clone = out.split()[0].rstrip(":")
            where = self.store.mnt / clone
            start = wait_for(lambda: read_counter(where / "counter"), f"the clone of {at}")
            wait_for(lambda: (read_counter(where / "counter") or 0) > start + 5 or (where / "counter.bad").exists(),
                     f"the clone of {at} to count on")
            assert not (where / "counter.bad").exists(), f"--at {at}: {(where / 'counter.bad').read_text()}"
            self.store.sls("stop", clone, "--store", str(self.store.path))
        fsck = self.store.sls("fsck", str(self.store.path), check=False)
        assert fsck.returncode == 0, fsck.stdout
        self.store.sls("stop", "--store", str(self.store.path))

    def _set_policy(self, policy: dict) -> None:
        """The store's retention policy (in its FORMAT file: read when the store is opened)."""
        path = self.store.path / "FORMAT"
        meta = {k: v for k, v in json.loads(path.read_text()).items() if k != "retention"}
        path.write_text(json.dumps({**meta, **({"retention": policy} if policy else {})}))


def test_every_listed_group_checkpoint_restores_after_random_history(group_binaries):
    GroupHistory.binaries = group_binaries
    run_state_machine_as_test(GroupHistory, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=6, deadline=None, derandomize=not EXPLORE, database=None,
        phases=[Phase.generate], suppress_health_check=list(HealthCheck), verbosity=Verbosity.verbose))
