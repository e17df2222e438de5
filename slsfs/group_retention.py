"""What retention and GC keep for persistence groups beyond the store's policy.

The group daemon thins the history every few seconds with the mount's own retention
(FileSystem.apply_retention; its periodic checkpoints are off): the commits that the
store's policy (objectstore.retention: the newest N, then one per minute, hour, day;
tagged ones forever) keeps stay, the checkpoints being browsed, and what `needed` adds
(the FileSystem's `also_keep`): for each kept commit, the "files" commit that the group
record it carries names (`files_commit`: `.sls/checkpoints/<id>/fs` and `sls restore
--clone` read it; a files commit kept only for that is a helper: the older record its
own roots name may have lost its files commit), and each group's newest durable
checkpoint. The images and file systems a kept record names stay alive through the
record's refs. Space is given back by a collection keeping the same (the daemon runs one
when `Store.gc_due()` says the packs have doubled, and on `sls gc`; a plain `sls mount`
and an unmounted `sls gc` keep `needed` too); an explicit prune (`sls gc --keep-last N`)
still keeps each group's newest durable checkpoint.

What that promises, `check_links` checks in every `sls fsck` (objectstore.fsck runs it):
every retained commit that carries a group record finds the files commit the record
names, but for the helpers themselves (commits some record names as its files commit),
and among those never a group checkpoint's own commit (its label `group NAME #N: ...`,
as `sls log` shows it): a record names a commit of the file system's own (slsfs.daemon
`_files_unchanged`), never the previous group checkpoint's, which retention would keep
without its files.
"""
from __future__ import annotations

from objectstore import ChunkId, Store, StoreError
from objectstore.store import VOLUME_PREFIX
from objectstore.fsck import add_link_check

from . import groups

def files_commits(store: Store, keep: set[int]) -> set[int]:
    """The files commits named by the group records of the commits `keep` (for
    `Store.gc(also_keep=...)`, whose retention cannot see these links)."""
    found: dict[ChunkId, int] = {}           # group record root -> its files commit
    for commit in store.log():
        if commit.id not in keep:
            continue
        for name, root in commit.roots.items():
            if name.startswith(groups.ROOT_PREFIX) and root not in found:
                record = groups.load(store, name[len(groups.ROOT_PREFIX):], commit.roots)
                try:
                    found[root] = groups.files_commit_of(store, record).id
                except groups.GroupError:
                    found[root] = record.files_commit      # gone: fsck says so
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


def check_links(store: Store) -> list[str]:
    """Problems with what the group records of retained commits name, one line each, with
    what to do: a record that cannot be read; its image, file system or a clone volume
    missing; its files commit gone (`.sls/checkpoints/<id>/fs` and `sls restore --clone
    --at` need it), unless every commit carrying the record is itself a files commit some
    record names (retention keeps such a helper for its volume root only, not for its own
    record); its files commit holding other volume roots than the record's `fs` and
    `clone_volumes`. Either is fine when another retained commit holds those roots
    (groups.files_commit_of: what a clone then starts from; a store made by `sls recv`)."""
    log = store.log()
    by_id = {c.id: c for c in log}
    carriers: dict[tuple[str, ChunkId], list[int]] = {}     # (root name, record root) -> commits, oldest first
    for commit in reversed(log):
        for name, root in commit.roots.items():
            if name.startswith(groups.ROOT_PREFIX):
                carriers.setdefault((name, root), []).append(commit.id)
    problems: list[str] = []
    records: dict[tuple[str, ChunkId], groups.GroupCheckpoint] = {}
    for (name, root), ids in carriers.items():
        group = name[len(groups.ROOT_PREFIX):]
        try:
            records[name, root] = groups.load(store, group, {name: root})
        except (groups.GroupError, StoreError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"checkpoint {ids[0]}: the record of group {group!r} cannot be read: {exc}")
    helpers = {record.files_commit for record in records.values()} - {
        c.id for c in log if groups.is_group_checkpoint(c.label)}
    newest = newest_group_checkpoints(store)
    for key, record in records.items():
        where = f"checkpoint {carriers[key][0]}: group {record.settings.name!r} #{record.seq}"
        volumes = {record.settings.volume: record.fs, **record.clone_volumes}
        named = {"process image": record.image, "file system": record.fs,
                 **{f"clone volume {volume!r}": root for volume, root in record.clone_volumes.items()}}
        problems.extend(f"{where}: its {what} (chunk {bytes(root).hex()}) is missing"
                        for what, root in named.items() if not store.has(root))
        owners = [cid for cid in carriers[key] if cid not in helpers]
        files = by_id.get(record.files_commit)
        if not owners or _files_found(store, record):
            continue
        if files is None:
            problems.append(f"{_owned(owners)}: group {record.settings.name!r} #{record.seq} names files commit "
                            f"{record.files_commit}, which is gone (thinned or lost), and no other checkpoint holds "
                            f"its file system: `sls restore --clone --at {owners[0]}` and "
                            f".sls/checkpoints/{record.files_commit}/fs fail; its image and file system are still "
                            f"there (a restore without --clone uses them). {_clearing(owners, newest)}")
        else:
            differ = sorted(volume for volume, root in volumes.items()
                            if files.roots.get(VOLUME_PREFIX + volume) != root)
            problems.append(f"{_owned(owners)}: group {record.settings.name!r} #{record.seq}: its files commit "
                            f"{files.id} holds other roots of volume(s) {', '.join(map(repr, differ))} than the "
                            f"record's, and no other checkpoint holds them: `sls restore --clone --at {owners[0]}` "
                            f"fails and .sls/checkpoints/{files.id}/fs shows other files than `sls restore --at "
                            f"{owners[0]}` restores (the record's). {_clearing(owners, newest)}")
    return problems


def _files_found(store: Store, record: groups.GroupCheckpoint) -> bool:
    try:
        groups.files_commit_of(store, record)
    except groups.GroupError:
        return False
    return True


def _owned(owners: list[int]) -> str:
    more = f" (and {len(owners) - 1} later checkpoints carrying it)" if len(owners) > 1 else ""
    return f"checkpoint {owners[0]}{more}"


def _clearing(owners: list[int], newest: set[int]) -> str:
    """What clears a broken link: dropping the checkpoints that carry the record (nothing
    repairs the link itself: the files of that instant are gone). A group's newest
    checkpoint cannot be dropped: its next checkpoint (after `sls restore`) supersedes it."""
    if newest & set(owners):
        return ("It is the group's newest checkpoint, which stays: the report goes once the group has "
                "checkpointed again and retention drops this one")
    return ("To clear this report, drop it: `sls gc STORE " + " ".join(f"--forget {cid}" for cid in owners)
            + "` (nothing else goes)")


add_link_check(check_links)
