"""Retention in the group daemon: thin old checkpoints by the store's policy.

The daemon turns the mount's own retention off (its periodic checkpoints are off), so
it thins the history itself, every few seconds: the commits that the store's policy
(objectstore.retention: the newest N, then one per minute, hour, day; tagged ones
forever) keeps stay, and so does, for each of them, the "files" commit that the group
records it names point to (`files_commit`: `.sls/checkpoints/<id>/fs` and
`sls restore --clone` read it; a files commit kept only for that is a helper: the older
record its own roots name may have lost its files commit). The images and file systems a kept record names stay
alive through the record's refs. Space is given back by a collection keeping what
`needed` names (the daemon runs one when `Store.gc_due()` says the packs have doubled,
and on `sls gc`); an explicit prune (`sls gc --keep-last N`) still keeps each group's
newest durable checkpoint.
"""
from __future__ import annotations

import time

from objectstore import ChunkId, Store
from objectstore.retention import retained

from . import groups


def thin(store: Store, now: float | None = None) -> int:
    """Forget the commits that neither the policy nor a kept group record needs; how many."""
    log = store.log()
    if len(log) <= store.retention.keep_last:
        return 0
    keep = retained(((c.id, c.time) for c in log), store.tags().values(), store.retention,
                    time.time() if now is None else now)
    keep |= files_commits(store, keep)
    if len(keep) >= len(log):
        return 0
    store.forget(keep)
    return len(log) - len(keep & {c.id for c in log})


def files_commits(store: Store, keep: set[int]) -> set[int]:
    """The files commits named by the group records of the commits `keep` (for
    `Store.gc(also_keep=...)`, whose retention cannot see these links)."""
    found: dict[ChunkId, int] = {}           # group record root -> its files commit
    for commit in store.log():
        if commit.id not in keep:
            continue
        for name, root in commit.roots.items():
            if name.startswith(groups.ROOT_PREFIX) and root not in found:
                found[root] = groups.load(store, name[len(groups.ROOT_PREFIX):], commit.roots).files_commit
    return set(found.values())


def newest_group_checkpoints(store: Store) -> set[int]:
    """For each group the newest durable commit names, the oldest retained commit that
    carries that same record (the group checkpoint that wrote it, unless thinned
    already): `sls ps` and `sls log` show its id as the group's newest checkpoint, so an
    explicit prune (`sls gc --keep-last 1`) must not drop it."""
    log = store.log()
    durable = [c for c in log if c.id <= store.durable_id]
    if not durable:
        return set()
    records = {name: root for name, root in durable[0].roots.items() if name.startswith(groups.ROOT_PREFIX)}
    first: dict[str, int] = {}
    for commit in log:                     # newest first: the last match is the oldest
        for name, root in records.items():
            if commit.roots.get(name) == root:
                first[name] = commit.id
    return set(first.values())


def needed(store: Store, keep: set[int]) -> set[int]:
    """What GC must keep beyond `keep` for the groups: the files commits kept records
    name, and each group's newest durable checkpoint (Store.gc's `also_keep`)."""
    protected = keep | newest_group_checkpoints(store)
    return (protected - keep) | files_commits(store, protected)
