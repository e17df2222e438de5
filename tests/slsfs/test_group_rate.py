"""What `sls ps` says about a group's checkpoint rate: measured over the time the group has
had (not a fixed 5 s window, which showed a 2-second-old group at 40% of its rate), and why
it falls behind its --hz when each checkpoint takes longer than its period to be durable."""
from __future__ import annotations

import sys
import time

from slsfs.group_commands import _falls_behind
from slsfs.group_process import RunningGroup
from slsfs.groups import GroupSettings


def _group(times_ago: list[float]) -> RunningGroup:
    group = RunningGroup(GroupSettings(name="app", volume="main", mountpoint="/mnt", hz=10.0, argv=["app"]), [], None)
    now = time.monotonic()
    group.checkpoint_times.extend(now - ago for ago in times_ago)
    return group


def test_the_rate_of_a_young_group_is_over_its_age_and_an_old_ones_over_5_seconds():
    young = _group([2.0 - i * 0.1 for i in range(20)])           # 10 a second for 2 s
    assert 9.0 <= young.rate() <= 10.5
    old = _group([9.9 - i * 0.1 for i in range(100)])            # 10 a second for 10 s
    assert 9.0 <= old.rate() <= 10.5
    stalled = _group([8.0 - i * 0.1 for i in range(30)])         # none for the last 5 s
    assert stalled.rate() == 0.0
    assert _group([]).rate() == 0.0 and _group([0.5]).rate() == 0.0


def _status(rate: float, durable_ms: float | None, running: bool = True) -> dict:
    return {"hz": 10.0, "rate_hz": rate, "durable_ms_median": durable_ms, "running": running, "pages_last": 25000}


def test_ps_says_why_a_group_falls_behind_its_rate_only_when_writing_is_the_reason():
    note = _falls_behind(_status(2.5, 380.0))
    assert "checkpointed 2.5x a second, not 10" in note and "~380 ms" in note and "25,000 pages" in note
    assert _falls_behind(_status(9.5, 380.0)) == ""       # keeps its rate
    assert _falls_behind(_status(2.5, 30.0)) == ""        # slow for another reason: not claimed
    assert _falls_behind(_status(2.5, None)) == ""        # no checkpoint yet
    assert _falls_behind(_status(2.5, 380.0, running=False)) == ""


def test_groups_checkpointed_together_are_checkpointed_at_their_rate_not_more(group_store):
    """Two groups on one volume are checkpointed together (partners): the turn of one that
    its partner's checkpoint took since its last turn is skipped, also when that checkpoint
    was still under way as its turn came (it waited for the daemon's lock, then took its
    own at once: two groups at --hz 100 were each checkpointed ~113-135 times a second, and
    `sls ps`'s checkpoints counter rose faster than their rate). The window is measured
    around the requests: it can only be longer than the daemon's."""
    store, hz, seconds = group_store, 100, 4.0
    sleeper = ["--", sys.executable, "-c", "import time; time.sleep(3600)"]
    for name in ("one", "two"):
        store.sls("run", "--store", str(store.path), "--name", name, "--hz", str(hz), *sleeper)
    counts = lambda: {g["group"]: g["checkpoints"] for g in store.ps()["groups"]}   # noqa: E731
    started, before = time.monotonic(), counts()
    time.sleep(seconds)
    after, window = counts(), time.monotonic() - started
    for name in ("one", "two"):
        taken = after[name] - before[name]
        assert 0 < taken <= hz * window + 2, f"group {name}: {taken} checkpoints in {window:.2f} s at --hz {hz}"
    store.sls("stop", "--store", str(store.path))


def test_note_checkpoint_keeps_the_times_of_the_last_10_seconds_for_the_rate():
    group = _group([])
    for ago in (12.0, 10.5, 9.0, 4.0, 1.0):
        group.checkpoint_times.append(time.monotonic() - ago)
    group.note_checkpoint(stop_ms=1.0, durable_ms=2.0, pages=3, stop_phases={}, precopied=0)
    ages = [time.monotonic() - t for t in group.checkpoint_times]
    assert len(ages) == 4 and 8.9 < ages[0] < 10.0 and ages[-1] < 1.0
    assert 0.45 <= group.rate() <= 0.55 and group.pages_total == 3     # 3 in the last 4 s
