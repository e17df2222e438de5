"""Which checkpoints to keep: the newest N, then fewer and fewer as they age.

Like restic's `forget --keep-last --keep-hourly --keep-daily`: every checkpoint
among the newest `keep_last` is kept; older ones are kept one per minute for
`minutely` minutes, one per hour for `hourly` hours and one per day for `daily`
days (the newest in each period); tagged (named) checkpoints are kept forever,
and so is the newest checkpoint whatever its age. A store whose disk stays short of
space after a collection thins harder (`squeezed`), never its named checkpoints.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Iterable


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 100
    minutely: int = 60
    hourly: int = 48
    daily: int = 30

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"retention {name.replace('_', '-')} must be a whole number >= 0, not {value!r}")

    def changed(self, changes: dict) -> "RetentionPolicy":
        """This policy with the fields `changes` names set (ValueError for unknown names)."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"no retention setting {', '.join(sorted(unknown))} (settings: "
                             f"{', '.join(asdict(self))})")
        return replace(self, **changes)


PRESSURE_LEVELS = 9      # squeezed: 1-2 drop the tiers, each one past those halves keep_last


def squeezed(policy: RetentionPolicy, level: int) -> RetentionPolicy:
    """The policy by which a store short of space thins its history (Store.space_pressure,
    raised a level by each collection that leaves the disk short): level 1 drops the
    daily and hourly tiers, 2 the minutely, each level past that halves the newest N
    (1 at least). Named checkpoints stay at every level: the application's own state
    comes before its unnamed history (a writing server whose minutely checkpoints each
    hold most of its memory filled the disk within hours, and its writes then failed)."""
    if level <= 0:
        return policy
    return RetentionPolicy(keep_last=max(1, policy.keep_last >> max(0, level - 2)),
                           minutely=policy.minutely if level < 2 else 0, hourly=0, daily=0)


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


@dataclass(frozen=True)
class Prune:
    """An explicit request to drop history and free its space (`sls gc --keep-last N
    --keep-within SECONDS --forget ID|NAME`), like restic's `forget` then `prune`.

    With `keep_last` and/or `keep_within`, unnamed checkpoints that neither rule keeps
    are dropped (the rules add up, as in restic); with neither, the store's policy
    decides as in a plain gc. Each `forget` entry (a checkpoint id or a name) is dropped
    whatever the rules say; a named checkpoint goes only when named here by its name.
    The caller still keeps the newest checkpoint and whatever its `also_keep` names."""

    keep_last: int | None = None
    keep_within: float | None = None
    forget: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(f"--keep-last {self.keep_last}: keep at least 1 (the newest "
                             "checkpoint always stays)")
        if self.keep_within is not None and self.keep_within < 0:
            raise ValueError(f"--keep-within {self.keep_within}: a duration cannot be negative")

    @property
    def has_rules(self) -> bool:
        return self.keep_last is not None or self.keep_within is not None

    def to_json(self) -> dict:
        return {"keep_last": self.keep_last, "keep_within": self.keep_within, "forget": list(self.forget)}

    @classmethod
    def from_json(cls, doc: dict) -> "Prune":
        return cls(doc.get("keep_last"), doc.get("keep_within"), tuple(doc.get("forget") or ()))


def kept_by_rules(commits: Iterable[tuple[int, float]], prune: Prune, now: float) -> set[int]:
    """Ids among `commits` ((id, unix time) pairs) that `prune`'s keep rules keep
    (names and the caller's protections not included)."""
    ordered = sorted(commits, key=lambda c: c[0], reverse=True)
    keep: set[int] = set()
    if prune.keep_last is not None:
        keep.update(cid for cid, _ in ordered[:prune.keep_last])
    if prune.keep_within is not None:
        keep.update(cid for cid, when in ordered if when >= now - prune.keep_within)
    return keep


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PART = r"(\d+(?:\.\d+)?)([smhdw])"


def parse_duration(text: str) -> float:
    """Seconds in a duration like '90s', '30m', '2h', '1d12h' or '1w' (a bare number: seconds)."""
    spec = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", spec):
        return float(spec)
    if not re.fullmatch(f"(?:{_PART})+", spec):
        raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 30m, 2h, 1d12h or 1w")
    return sum(float(number) * _UNITS[unit] for number, unit in re.findall(_PART, spec))
