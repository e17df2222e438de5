"""Persistence-group records in the store: what a group checkpoint names.

A persistence group is an application (today: one process) whose files and memory are
checkpointed together. Every group checkpoint writes one small tree named
`grp/<group>` in the store's roots (format in docs/FORMAT.md, "Persistence groups"):

    b"meta"   JSON: format, version, the group's settings (volume, hz, argv, mount point,
              its directory in the mount), the checkpoint's sequence number and time, and
              the roots of one frozen instant: `image` (the process image tree), `fs` (the
              volume tree, as committed in `files_commit` inside the freeze) and
              `clone_volumes` (those of the clones grafted into it) -- all passed as refs,
              so GC keeps them as long as the record lives.
    b"stopped" JSON {"time": ...}: present once `sls stop GROUP` ended the group (the
              record is its last checkpoint, still restorable by name); a restore of
              another group does not bring it back as a partner. Dropped when the group
              is restored.
    b"ended"  JSON {"time": ..., "how": "exited" | "daemon stopped", "status": ...,
              "why": ... (optional)}: the group was no longer running when its daemon last
              saw it (its command ended, with that exit status, and why when the daemon
              knows it, such as a lazy restore that could not read a page; or the daemon
              was stopped), which `sls ps` shows when no daemon runs. Informational only;
              dropped when the group is restored.

Roots are carried from commit to commit, so any commit names the newest group
checkpoint taken at or before it; restore reads `fs` and `image` from that record
(not the commit's own volume root, which may hold writes made after the thaw).
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from objectstore import ChunkId, Commit, NotFound, Store, StoreError
from objectstore.store import VOLUME_PREFIX

from .group_names import bad_name_reason


FORMAT = "slsfs-group"
VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)  # version 1: settings without `init`; 1-2: no `directory`, `clone_volumes`;
#                                      1-3: no `device`; 1-4: no `seen_at`
ROOT_PREFIX = "grp/"
_META = b"meta"
_STOPPED = b"stopped"
_ENDED = b"ended"
FILES_LABEL_END = ": files"      # the label of a group checkpoint's files commit ends so (slsfs.daemon)


class GroupError(Exception):
    """A group request that cannot be done (message for the user)."""


def check_name(name: str) -> str:
    """`name`, if it can name a group (slsfs.group_names), else a GroupError saying why."""
    why = bad_name_reason(name)
    if why is not None:
        raise GroupError(why)
    return name


@dataclass
class GroupSettings:
    """How a group runs; kept in every checkpoint so that restore can start it again."""

    name: str
    volume: str
    mountpoint: str
    hz: float
    argv: list[str]
    mode: str = "cwd"
    output: str = ""                     # file receiving the application's stdout/stderr
    init: bool = False                   # PID 1 is sls-init, the command its child (version 2)
    directory: str = ""                  # where it runs, relative to the mount ("" = the mount's root;
    # a clone: its grafted directory); `mountpoint` is that directory (version 3)
    seen_at: str = ""                    # where its processes see `mountpoint`, when elsewhere (not
    # --root): the path a clone's origin ran at; where a group restored at another mount ran (version 5)

    def mount_root(self) -> str:
        """The mount point of the volume the group runs in (`mountpoint` less `directory`)."""
        if not self.directory:
            return self.mountpoint
        return self.mountpoint[:-len(self.directory)].rstrip("/") or "/"

    def in_mount(self, mount_root: str) -> str:
        """Where the group runs when its volume is mounted at `mount_root`."""
        return os.path.join(mount_root, self.directory) if self.directory else mount_root


@dataclass
class GroupCheckpoint:
    """One group checkpoint as recorded in `grp/<name>`."""

    settings: GroupSettings
    seq: int
    time: float
    image: ChunkId
    fs: ChunkId
    pids: list[int] = field(default_factory=list)   # as the processes see themselves
    files_commit: int = 0                  # the commit made in the frozen window (its volume root = fs)
    clone_volumes: dict[str, ChunkId] = field(default_factory=dict)   # volumes grafted in `fs`, their
    # roots in files_commit (version 3): a restore puts them back with the volume
    device: int = 0                        # the mount's device minor (st_dev 0:device; version 4; 0: unknown)

    def encode(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, "settings": asdict(self.settings), "seq": self.seq,
               "time": self.time, "image": self.image.hex(), "fs": self.fs.hex(), "pids": self.pids,
               "files_commit": self.files_commit,
               "clone_volumes": {name: root.hex() for name, root in sorted(self.clone_volumes.items())},
               "device": self.device}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "GroupCheckpoint":
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise GroupError(f"not a persistence-group record (format {doc.get('format')!r})")
        if doc.get("version") not in READABLE_VERSIONS:
            raise GroupError(f"persistence-group record version {doc.get('version')} is not supported "
                             f"(this slsfs reads versions {READABLE_VERSIONS[0]} to {VERSION}); upgrade slsfs")
        return cls(GroupSettings(**doc["settings"]), doc["seq"], doc["time"],
                   ChunkId(bytes.fromhex(doc["image"])), ChunkId(bytes.fromhex(doc["fs"])),
                   doc["pids"], doc["files_commit"],
                   {name: ChunkId(bytes.fromhex(root)) for name, root in doc.get("clone_volumes", {}).items()},
                   doc.get("device", 0))


def ran_from(settings: GroupSettings, store_path: str | os.PathLike) -> bool:
    """Whether the group whose settings these are ran from the store at `store_path` (its
    daemon keeps the group's output file there), not from the store that sent it (`sls
    recv`): where it ran then is the sender's mount point, which a restore here does not
    take by default (`sls run` mounts at STORE.mnt: default_mount_root). A group adopted by
    `sls persist` has no output file: taken as ours."""
    return not settings.output or (os.path.realpath(os.path.dirname(settings.output))
                                   == os.path.realpath(store_path))


def default_mount_root(settings: GroupSettings, store_path: str | os.PathLike) -> str:
    """Where a restore of the group from the store at `store_path` mounts its volume when
    the command gives no mount point: where it ran, if it ran from this store (ran_from),
    else the store's own default, STORE.mnt (after `sls recv`, not the sender's)."""
    return settings.mount_root() if ran_from(settings, store_path) else os.path.abspath(store_path) + ".mnt"


def others_running(store: str, name: str, others: list[str]) -> None:
    """Refuse to restore group `name` of `store` while the groups `others` run (the
    restore puts the volume's files back, so they would be stopped too): a GroupError
    saying what to do."""
    if others:
        raise GroupError(f"other groups run in {store}: {', '.join(others)}; restoring {name} puts "
                         "the volume's files back to its checkpoint, so they would be stopped too. "
                         f"Stop them first (sls stop GROUP --store {store}) or pass --force "
                         "(their last durable checkpoints stay)")


def save(store: Store, record: GroupCheckpoint) -> None:
    """Name `record` as the group's newest checkpoint in the working roots."""
    tree = store.tree()
    tree.put(_META, record.encode(), refs=[record.image, record.fs, *record.clone_volumes.values()])
    store.set_root(ROOT_PREFIX + record.settings.name, tree.flush())


def mark_stopped(store: Store, name: str) -> None:
    """Note in group `name`'s newest record that the user stopped it: no restore of
    another group brings it back (it pairs with their files commit only because nothing
    was checkpointed between its stop and theirs)."""
    _mark(store, name, _STOPPED, {"time": time.time()})


def mark_ended(store: Store, name: str, how: str, status: int | None, why: str = "") -> None:
    """Note in group `name`'s newest record how it ended (`how`: "exited", with its exit
    status and, if known, `why`; or "daemon stopped"), for `sls ps` to show when no daemon
    runs."""
    _mark(store, name, _ENDED, {"time": time.time(), "how": how, "status": status, **({"why": why} if why else {})})


def _mark(store: Store, name: str, key: bytes, doc: dict) -> None:
    root = store.roots().get(ROOT_PREFIX + name)
    if root is None:
        return
    tree = store.tree(root)
    tree.put(key, json.dumps(doc).encode())
    store.set_root(ROOT_PREFIX + name, tree.flush())


def as_base(store: Store, root_name: str, mine: ChunkId, base: ChunkId) -> bool:
    """Whether `mine`, a group's record in a store receiving an incremental stream, is the
    stream's base record (`base`) but for the notes written into it since (`sls stop`'s
    "stopped", how it ended): the group has taken no checkpoint here since the base, so
    the stream replaces nothing (objectstore.stream.recv's `as_base`). A round trip
    A -> B -> A needed `sls recv --force` once A's group had been stopped after the send."""
    if not root_name.startswith(ROOT_PREFIX):
        return False
    return store.tree(mine).get(_META) == store.tree(base).get(_META) is not None


def stopped(store: Store, name: str, roots: dict[str, ChunkId]) -> bool:
    """Whether group `name`'s record in `roots` was marked by `mark_stopped`."""
    root = roots.get(ROOT_PREFIX + name)
    return root is not None and store.tree(root).get(_STOPPED) is not None


def ended(store: Store, name: str, roots: dict[str, ChunkId]) -> dict | None:
    """How group `name` ended as `mark_ended` noted it in its record in `roots`, else None
    (it was running when its daemon died, or its record predates the note)."""
    root = roots.get(ROOT_PREFIX + name)
    raw = store.tree(root).get(_ENDED) if root is not None else None
    return json.loads(raw) if raw is not None else None


def load(store: Store, name: str, roots: dict[str, ChunkId] | None = None) -> GroupCheckpoint:
    """The group's checkpoint named in `roots` (default: the working roots)."""
    roots = store.roots() if roots is None else roots
    root = roots.get(ROOT_PREFIX + name)
    if root is None:
        known = ", ".join(sorted(group_names(roots))) or "none"
        raise GroupError(f"no persistence group {name!r} in this checkpoint of the store (groups: {known})")
    raw = store.tree(root).get(_META)
    if raw is None:
        raise GroupError(f"the record of group {name!r} has no metadata (damaged store? run "
                         f"`sls fsck {store.path}`)")
    return GroupCheckpoint.decode(raw)


def readable(store: Store, roots: dict[str, ChunkId]) -> tuple[dict[str, GroupCheckpoint], dict[str, str]]:
    """Every group record named in `roots` that can be read, by group name; and why each
    other one cannot (damaged, or of a newer slsfs): one bad record must not keep the
    others from being found."""
    records, unreadable = {}, {}
    for name in group_names(roots):
        try:
            records[name] = load(store, name, roots)
        except (GroupError, StoreError, ValueError, KeyError, TypeError) as exc:
            unreadable[name] = str(exc)
    return records, unreadable


def stored(store: Store, leave_out: Iterable[str] = ()) -> list[dict]:
    """What `sls ps` lists of the groups the store holds (what `sls restore` can bring
    back), but those named in `leave_out` (running): name, newest checkpoint, its time, the
    command, whether the user stopped it and how it ended; or why its record is unreadable."""
    roots = store.roots()
    records, unreadable = readable(store, roots)
    found = []
    for name, record in records.items():
        if name in leave_out:
            continue
        newest = kept(store, name)
        found.append({"group": name, "checkpoint": newest[0].commit if newest else None, "time": record.time,
                      "argv": record.settings.argv, "stopped": stopped(store, name, roots),
                      "ended": ended(store, name, roots)})
    return sorted(found + [{"group": name, "error": why} for name, why in unreadable.items() if name not in leave_out],
                  key=lambda g: g["group"])


def group_names(roots: dict[str, ChunkId]) -> list[str]:
    return sorted(n[len(ROOT_PREFIX):] for n in roots if n.startswith(ROOT_PREFIX))


@dataclass
class Kept:
    """One group checkpoint still in the store: its record and the retained commits
    carrying it, oldest first (the first is the group checkpoint that wrote it, unless
    thinned; later ones carry it until the group's next checkpoint)."""

    record: GroupCheckpoint
    carriers: list[int]

    @property
    def commit(self) -> int:
        return self.carriers[0]


def kept(store: Store, name: str) -> list[Kept]:
    """Every readable checkpoint of group `name` in the retained commits, newest first."""
    found: dict[ChunkId, Kept] = {}
    for commit in reversed(store.log()):                 # oldest first
        root = commit.roots.get(ROOT_PREFIX + name)
        if root is None:
            continue
        if root not in found:
            try:
                found[root] = Kept(load(store, name, {ROOT_PREFIX + name: root}), [])
            except (GroupError, StoreError, ValueError, KeyError, TypeError):
                continue                                 # fsck names it (group_retention.check_links)
        found[root].carriers.append(commit.id)
    return sorted(found.values(), key=lambda k: k.commit, reverse=True)


def is_group_checkpoint(label: str) -> bool:
    """Whether a commit's label is that of a group checkpoint's record commit (slsfs.daemon
    `_take`: "group app #7: periodic"), not of its files commit ("group app #7: files")."""
    return label.startswith("group ") and not label.endswith(FILES_LABEL_END)


def holds_files_of(commit: Commit, record: GroupCheckpoint) -> bool:
    """Whether `commit` holds the record's file system: its volume and clone volume roots."""
    volumes = {record.settings.volume: record.fs, **record.clone_volumes}
    return all(commit.roots.get(VOLUME_PREFIX + volume) == root for volume, root in volumes.items())


def files_commit_of(store: Store, record: GroupCheckpoint) -> Commit:
    """The commit holding the record's file system, which `restore --clone` clones and
    `.sls/checkpoints/<id>/fs` shows: its `files_commit`, else the oldest retained commit
    holding the same roots (a store made by `sls recv` holds the record as sent, naming the
    sender's commit ids: the received commit mostly holds those roots itself). A GroupError
    when none does."""
    try:
        named = store.commit_by_id(record.files_commit)
    except NotFound:
        named = None
    if named is not None and holds_files_of(named, record):
        return named
    for commit in reversed(store.log()):
        if holds_files_of(commit, record):
            return commit
    state = "is gone" if named is None else "holds other files"
    raise GroupError(f"group {record.settings.name!r} #{record.seq}: its files commit {record.files_commit} {state} "
                     "and no checkpoint of this store holds its file system, so it cannot be cloned or browsed "
                     "(`sls restore` without --clone uses the record's own copy)")


def label_group(label: str) -> str | None:
    """The group whose checkpoint made a commit labelled `label` (its files commit: "group
    NAME #N: files"; its own: "group NAME #N OTHER #M: periodic", the first named), or None."""
    found = re.match(r"group ([A-Za-z0-9][A-Za-z0-9._-]{0,63}) #\d+", label)
    return found.group(1) if found else None


def diff_roots(store: Store, spec: str | int) -> tuple[int, dict]:
    """(id, roots) of a checkpoint for `sls diff`: `GROUP#N` is group GROUP's checkpoint
    N (`resolve`; `#N` when the store has one group), its files as of its freeze (the
    record's volume roots, not its commit's, which also holds what was written after the
    thaw); else the store's checkpoint (an id, a name, 'latest~N', a time)."""
    group, sep, _ = str(spec).partition("#")
    if not sep:
        commit = store.resolve(spec)
        return commit.id, commit.roots
    if not group:                            # '#N': the store's one group, if it has one
        known = group_names(store.roots())
        if len(known) != 1:
            raise GroupError(f"say which group's checkpoint {spec!r} is: GROUP{spec} "
                             f"(groups: {', '.join(known) or 'none'})")
        group = known[0]
    record, commit = resolve(store, group, str(spec))
    volumes = {record.settings.volume: record.fs, **record.clone_volumes}
    return commit.id, {VOLUME_PREFIX + volume: root for volume, root in volumes.items()}


def resolve(store: Store, name: str, at: str | None) -> tuple[GroupCheckpoint, Commit | None]:
    """The group checkpoint to restore and the commit it is taken from: the newest
    durable one, or the one `at` names (see slsfs.group_commands.AT_HELP):

    - `NAME#N` or `#N`: group checkpoint number N (`sls log` labels it "group NAME #N: ...");
    - a commit id or a name (tag) of a commit: if that commit is the files commit of one
      of the group's checkpoints (the commit made in its freeze), that checkpoint; else
      the group's newest checkpoint at that commit (a group checkpoint's own commit
      names itself);
    - 'latest', 'latest~N' or an ISO-8601 time: the newest at or before it.

    An unknown or ambiguous `at` is a GroupError naming the group's checkpoints."""
    if at is None:
        return load(store, name), store.head
    spec = at.strip()
    checkpoints = kept(store, name)
    if not checkpoints and ROOT_PREFIX + name not in store.roots():
        load(store, name)                                # raises: no such group (naming those there are)
    number = re.fullmatch(rf"(?:{re.escape(name)})?#(\d+)", spec)
    if number and spec in store.tags():
        raise GroupError(f"{spec!r} is ambiguous: both a checkpoint name (checkpoint {store.tags()[spec]}) and "
                         f"group {name!r}'s checkpoint number; give the checkpoint id instead")
    if number:
        matches = _one_per_freeze(k for k in checkpoints if k.record.seq == int(number.group(1)))
        if len(matches) != 1:
            why = ("was thinned or never taken" if not matches else
                   f"is ambiguous: {len(matches)} checkpoints carry that number (a restore went back "
                   f"before it), at commits {', '.join(str(k.commit) for k in matches)}: give one of those")
            raise GroupError(f"group {name!r} checkpoint {spec} {why}. {_listing(store, name, checkpoints)}")
        return matches[0].record, store.commit_by_id(matches[0].commit)
    try:
        commit = store.resolve(int(spec) if spec.isdigit() else spec)
    except NotFound as exc:
        raise GroupError(f"no checkpoint {at!r}: {exc}. {_listing(store, name, checkpoints)}") from None
    own = next((k for k in checkpoints if k.commit == commit.id), None)
    if own is not None and is_group_checkpoint(commit.label):
        return own.record, commit                        # a group checkpoint's own commit (its record's first)
    users = [k for k in checkpoints if k.record.files_commit == commit.id and holds_files_of(commit, k.record)]
    if users:                                            # the files commit of one of its checkpoints: the
        return users[-1].record, store.commit_by_id(users[-1].commit)    # first to name it (made it)
    if (label_group(commit.label) == name and commit.label.endswith(FILES_LABEL_END)
            and any(k.commit > commit.id for k in checkpoints)):     # (not one whose record is still coming)
        raise GroupError(f"checkpoint {commit.id} holds the files of {commit.label[:-len(FILES_LABEL_END)]}, "
                         "whose record was thinned (or never written: that checkpoint failed). "
                         + _listing(store, name, checkpoints))
    try:
        return load(store, name, commit.roots), commit
    except GroupError:
        raise GroupError(f"group {name!r} had no checkpoint yet at checkpoint {commit.id}. "
                         f"{_listing(store, name, checkpoints)}") from None


def _one_per_freeze(checkpoints: Iterable[Kept]) -> list[Kept]:
    """`checkpoints` (newest first) less the later records of one freeze: a note written
    into the record after it (`sls stop`'s "daemon stopped", an exit) keeps its number
    and files commit, and is the same checkpoint, not a second one carrying the number.
    Each one kept carries the commits of the records left out too (their names)."""
    carriers: dict[tuple[int, int], list[int]] = {}
    oldest: dict[tuple[int, int], Kept] = {}
    for k in checkpoints:
        freeze = (k.record.seq, k.record.files_commit)      # (files_commit 0: a record older than it)
        carriers.setdefault(freeze, []).extend(k.carriers)
        oldest[freeze] = k
    return sorted((Kept(k.record, sorted(carriers[freeze])) for freeze, k in oldest.items()),
                  key=lambda k: k.commit, reverse=True)


def group_at_checkpoint(store: Store, spec: str) -> tuple[str, str] | None:
    """(group, checkpoint) when `spec` is no group of `store` but a checkpoint (`NAME#N`,
    an id, a name given by `sls checkpoint --name`, 'latest~N', an ISO time) of a group:
    the group whose checkpoint made that commit (its own or its files commit), else the
    group checkpointed last at that commit (its partners come back with it). What
    `sls restore SPEC` restores."""
    roots = store.roots()
    if ROOT_PREFIX + spec in roots:
        return None
    numbered = re.fullmatch(r"(.+)#\d+", spec)
    if numbered and ROOT_PREFIX + numbered.group(1) in roots:
        return numbered.group(1), spec
    try:
        commit = store.resolve(spec)
    except (NotFound, ValueError):
        return None
    maker = label_group(commit.label)
    if maker is not None and ROOT_PREFIX + maker in roots:
        return maker, str(commit.id)
    records = readable(store, commit.roots)[0].values()
    if not records:
        return None
    newest = max(records, key=lambda r: r.files_commit)
    return newest.settings.name, str(commit.id)


def resolve_named(store: Store, spec: str, at: str | None) -> tuple[GroupCheckpoint, Commit | None, str | None]:
    """`resolve` for what `sls restore SPEC [--at AT]` names: a group, or (without `at`) a
    checkpoint of one (group_at_checkpoint); also the `at` that came to (AT, or that
    checkpoint). A GroupError if it names nothing."""
    if at is None and (named := group_at_checkpoint(store, spec)):
        spec, at = named
    elif at is None and ROOT_PREFIX + spec not in store.roots():
        known = ", ".join(group_names(store.roots())) or "none"
        raise GroupError(f"no persistence group {spec!r} in this store (groups: {known}), nor a checkpoint "
                         f"of one ({_not_a_group_checkpoint(store, spec)})")
    return (*resolve(store, spec, at), at)


def _not_a_group_checkpoint(store: Store, spec: str) -> str:
    """Why `spec` names no group's checkpoint (group_at_checkpoint found none)."""
    try:
        commit = store.resolve(spec)
    except (NotFound, ValueError) as exc:
        return str(exc)
    return f"checkpoint {commit.id} holds none"


def _listing(store: Store, name: str, checkpoints: list[Kept], shown: int = 8) -> str:
    """What the user can give instead: the group's newest checkpoints and its named ones."""
    if not checkpoints:
        return f"Group {name!r} has no checkpoint in this store."
    checkpoints = _one_per_freeze(checkpoints)
    tags: dict[int, list[str]] = {}
    for tag, cid in store.tags().items():
        tags.setdefault(cid, []).append(tag)
    named = [k for k in checkpoints[shown:] if any(c in tags for c in k.carriers)]
    items = [f"#{k.record.seq} (checkpoint {k.commit}"
             + "".join(f", name {t!r}" for c in k.carriers for t in sorted(tags.get(c, ()))) + ")"
             for k in checkpoints[:shown] + named]
    more = len(checkpoints) - shown - len(named)
    return (f"Group {name!r} has {len(checkpoints)} checkpoints; newest: {', '.join(items)}"
            + (f" and {more} older (`sls log`)" if more > 0 else "") + ".")
