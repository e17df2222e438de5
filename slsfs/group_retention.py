"""Retention in the group daemon: thin old checkpoints by the store's policy.

The daemon turns the mount's own retention off (its periodic checkpoints are off), so
it thins the history itself, every few seconds: the commits that the store's policy
(objectstore.retention: the newest N, then one per minute, hour, day; tagged ones
forever) keeps stay, and so does, for each of them, the "files" commit that the group
records it names point to (`files_commit`: `.sls/checkpoints/<id>/fs` and
`sls restore --clone` read it; a files commit kept only for that is a helper: the older
record its own roots name may have lost its files commit). The images and file systems a kept record names stay
alive through the record's refs. Space is given back by `sls gc`, as for the mount.
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
    files_commits: dict[ChunkId, int] = {}           # group record root -> its files commit
    for commit in log:
        if commit.id not in keep:
            continue
        for name, root in commit.roots.items():
            if name.startswith(groups.ROOT_PREFIX) and root not in files_commits:
                files_commits[root] = groups.load(store, name[len(groups.ROOT_PREFIX):], commit.roots).files_commit
    keep |= set(files_commits.values())
    if len(keep) >= len(log):
        return 0
    store.forget(keep)
    return len(log) - len(keep & {c.id for c in log})
