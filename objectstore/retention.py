"""Which checkpoints to keep: the newest N, then fewer and fewer as they age.

Like restic's `forget --keep-last --keep-hourly --keep-daily`: every checkpoint
among the newest `keep_last` is kept; older ones are kept one per minute for
`minutely` minutes, one per hour for `hourly` hours and one per day for `daily`
days (the newest in each period); tagged (named) checkpoints are kept forever,
and so is the newest checkpoint whatever its age.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 100
    minutely: int = 60
    hourly: int = 48
    daily: int = 30


def retained(commits: Iterable[tuple[int, float]], tagged: Iterable[int],
             policy: RetentionPolicy, now: float) -> set[int]:
    """Ids to keep among `commits` ((id, unix time) pairs)."""
    ordered = sorted(commits, key=lambda c: c[0], reverse=True)
    keep = {cid for cid, _ in ordered[:max(policy.keep_last, 1)]}
    tiers = ((60.0, policy.minutely), (3600.0, policy.hourly), (86400.0, policy.daily))
    for period, count in tiers:
        seen: set[int] = set()
        for cid, when in ordered:
            bucket = int((now - when) // period) if when <= now else 0
            if bucket < count and bucket not in seen:
                seen.add(bucket)
                keep.add(cid)
    keep.update(tagged)
    return keep
