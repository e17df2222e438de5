"""Garbage collection: keep what retained commits reach, compact mostly-dead packs.

A collection runs in short steps (`Collection.steps`), so that a server (the mount, the
group daemon) answers its requests and takes its checkpoints between them; `collect`
runs them all at once (`sls gc` on an unmounted store, tests). Snapshot-at-beginning:

1. The start (the first step, to be run at an instant when no checkpoint is half
   written): apply the retention policy, or an explicit `Prune` request (`sls gc
   --keep-last/--keep-within/--forget`: see `prune_keep`), and record the retained commits
   in a catalog record (durable by the first sync, before anything is deleted); take the
   roots to keep at that instant (retained commits, the working state, trees in use,
   chunks put since the last commit); note the active pack (the watermark: only packs
   before it are compacted, so everything written from here on stays) and start
   recording dedup hits (PackStore.watch_dedup: a put that finds a chunk already stored
   makes it live again, even one no root reached at the start).
2. Mark every chunk the start's roots reach, a slice at a time. Trees are copy-on-write:
   what those roots reach does not change under the marker.
3. Sum each pack's live and dead bytes, a batch at a time, and choose the packs to
   compact: sealed before the watermark, with live bytes under `COMPACT_BELOW` of their
   size, or holding only store records, or holding pages stored as they were, not
   compressed yet (PackStore.pending_compression: a checkpoint's pages, compressed as
   they are copied: only those that survived pay for lz4), less the young ones a
   server's own collection spares for the next (Collection._spared).
4. One pack at a time: copy the chunks that were marked into the active pack: the step
   yields ChunkCopies for its driver to run (in a worker thread if it likes: the
   records' reads, checks and lz4, ~2 MiB at a time), then appends what it prepared
   (PackStore.place_copies); those found by a dedup hit since are copied too, the
   others dropped (a slice at a time); once per collection append a fresh
   catalog (it supersedes the store records of the packs about to go); then the step
   yields a `Removal` for its driver to run (in a worker thread if it likes): a sync
   that makes all that durable, and only then the deletion of the pack's files. Chunks
   keep their ids when they move, so no commit or tree is ever rewritten.

A crash at any step leaves a store whose newest catalog names what is kept, each chunk
of it in a pack that is still there or copied and durable elsewhere.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .chunks import NODE
from .errors import NotFound, StoreError
from .packstore import ChunkCopies, PendingSync, remove_files
from .retention import Prune, kept_by_rules, retained
from .tree import node_links

COMPACT_BELOW = 0.5
SPARE_SHARE = 4        # a collection that spares young packs leaves at most this share of the pending budget in them
SLICE_S = 0.004        # a collection's work between two of its yields
TALLY_BATCH = 8192     # chunks summed per step (~0.3 us each)
COPY_BATCH = 2 << 20   # stored bytes of live chunks a compaction reads (and compresses) per worker job


def reachable(store, roots: Iterable[bytes], problems: list[str] | None = None,
              seen: set[bytes] | None = None) -> set[bytes]:
    """Every chunk reachable from `roots` (node children and entry refs, recursively),
    added to `seen` (given: what an earlier walk reached, not walked again) and returned."""
    seen = set() if seen is None else seen
    for _ in marking(store, roots, seen, problems, slice_s=float("inf")):
        pass
    return seen


def marking(store, roots: Iterable[bytes], seen: set[bytes], problems: list[str] | None = None,
            slice_s: float = SLICE_S) -> Iterator[None]:
    """Add every chunk reachable from `roots` to `seen`, yielding after each `slice_s` of
    work. The refs of a node are sorted by one look-up each into data chunks, marked at
    once, and the rest (nodes, and ids the store lacks, whose error is then reported as
    for any chunk): 5.7 us per live chunk before (a GC of a Redis group's store, 245k live
    chunks, 1.4 s), when each ref was visited as a chunk of its own."""
    stack = list(roots)
    clock = time.perf_counter
    deadline = clock() + slice_s
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        try:
            if store.kind(cid) != NODE:
                continue
            children, refs = node_links(store.get(cid), cid)
        except StoreError as exc:
            if problems is None:
                raise
            problems.append(f"chunk {bytes(cid).hex()}: {exc}")
            continue
        stack.extend(c for c in children if c not in seen)
        if refs:     # mostly data chunks (pages, file blocks): marked here, not visited one by one
            data, others = store.data_chunks(set(refs).difference(seen))
            seen.update(data)
            stack.extend(others)
        if clock() > deadline:
            yield
            deadline = clock() + slice_s


class Removal:
    """The blocking end of a pack's compaction, for a collection's driver to run (in a
    worker thread if it likes) before the next step: wait for `sync` (the pack's kept
    chunks, copied, and the fresh catalog become durable), then delete its `files` (none
    at the end of a collection: its last sync)."""

    def __init__(self, sync: PendingSync | None, files: list[Path]) -> None:
        self.sync, self.files = sync, files
        self.freed = 0

    def run(self) -> None:
        if self.sync is not None:
            self.sync.wait()
        self.freed = remove_files(self.files)


class Collection:
    """One garbage collection of `store`, in steps (see the module docstring).

    `also_keep(kept commit ids)` names further commits to keep: those that kept
    commits point to by id inside their data (the store cannot see such links), and
    those the caller uses (browsed checkpoints, a group's newest checkpoint). Figures
    for the user are in `result` once the steps are done."""

    def __init__(self, store, *, progress: Callable[[str], None] | None = None, now: float | None = None,
                 also_keep: Callable[[set[int]], set[int]] | None = None, prune: Prune | None = None,
                 slice_s: float = SLICE_S, spare_young: bool = False) -> None:
        self.store, self.progress, self.now = store, progress, now
        self.also_keep, self.prune, self.slice_s = also_keep, prune, slice_s
        self.spare_young = spare_young
        self.result: dict | None = None
        self.busy_s = 0.0          # time spent inside the steps (the caller's thread)
        self.longest_step_s = 0.0  # what a request waits at most for the collection

    def _lap(self, since: float) -> None:
        """A step that began at `since` ends now: count it."""
        now = time.perf_counter()
        self.busy_s += now - since
        self.longest_step_s = max(self.longest_step_s, now - since)

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def steps(self) -> Iterator[Removal | ChunkCopies | None]:
        """The collection, yielding between short steps: None (go on when you like), or
        blocking work for a worker thread whose run() must have returned before the next
        step: ChunkCopies (a compaction's reads and lz4) or a Removal (it waits for a sync
        and deletes a pack's files: a driver that must not delete packs at some moment
        holds the Removal back). The first step is
        the start: run it when no checkpoint is half written (chunks put before the last
        commit and not yet named by any tree would be lost)."""
        started = time.monotonic()
        clock = time.perf_counter
        mark = clock()
        store, packs = self.store, self.store.packs
        before_commits = len(store.log())
        forgotten_names = self._forget(before_commits)
        if self.prune is not None or store.pending_over_budget() or store.space_pressure or store.short_of_space():
            packs.seal_active()     # a small disk's dead data, or pages to compress, may all sit in the active pack
        watermark = packs.active
        roots = store.live_roots()
        dedup_hits = packs.watch_dedup()
        try:
            live: set[bytes] = set()
            self._say("marking")
            for _ in marking(store, roots, live, slice_s=self.slice_s):
                self._lap(mark)
                yield None
                mark = clock()
            total: dict[int, int] = {}
            alive: dict[int, int] = {}
            members: dict[int, list[bytes]] = {}
            dead_chunks = 0
            ids, locs = packs.locations()
            for at in range(0, len(ids), TALLY_BATCH):
                dead_chunks += packs.tally(ids[at:at + TALLY_BATCH], locs[at:at + TALLY_BATCH],
                                           live, total, alive, members)
                self._lap(mark)
                yield None
                mark = clock()
            del ids, locs
            pending = packs.pending_compression()
            spared = self._spared(pending, total, alive, watermark)
            victims = sorted(n for n in set(total) | packs.meta_packs() if n < watermark and n not in spared and (
                n not in total or n in pending or alive.get(n, 0) < COMPACT_BELOW * total[n]))   # (not in total: records only)
            packs.spared = spared
            self._say(f"compacting {len(victims)} packs")
            freed = 0
            renewed = False

            def keep(cid: bytes) -> bool:
                return cid in live or cid in dedup_hits

            for number in victims:
                chunks = members.pop(number, [])
                moved = 0
                for copies in packs.copy_batches(number, (c for c in chunks if c in live), COPY_BATCH):
                    self._lap(mark)
                    yield copies
                    mark = clock()
                    moved += packs.place_copies(copies)
                for at in range(0, len(chunks), 64):    # the rest: dead ones dropped, dedup hits copied
                    moved += packs.move_chunks(number, chunks[at:at + 64], keep)
                    if clock() - mark > self.slice_s:
                        self._lap(mark)
                        yield None
                        mark = clock()
                if not renewed:
                    store.renew_catalog()
                    renewed = True
                removal = Removal(packs.begin_sync(), packs.retire_pack(number))
                self._lap(mark)
                yield removal
                mark = clock()
                if removal.sync is not None:
                    packs.end_sync(removal.sync)
                freed += max(0, removal.freed - moved)
            removal = Removal(packs.begin_sync(), [])      # the catalog of the start, if no pack went
            if removal.sync is not None:
                self._lap(mark)
                yield removal
                mark = clock()
                packs.end_sync(removal.sync)
        finally:
            packs.end_watch()
        store.note_collected(sum(alive.values()))
        self._lap(mark)
        self.result = {"commits_before": before_commits, "commits_after": len(store.log()),
                       "live_chunks": len(live), "unreachable_chunks": dead_chunks,
                       "resurrected_chunks": len(dedup_hits - live),
                       "packs_compacted": len(victims), "packs_spared": len(packs.spared), "bytes_freed": freed,
                       "seconds": round(time.monotonic() - started, 3),
                       "busy_seconds": round(self.busy_s, 3),
                       "longest_step_ms": round(self.longest_step_s * 1000, 2)}
        if self.prune is not None:
            self.result["names_forgotten"] = forgotten_names

    def _spared(self, pending: dict[int, int], total: dict[int, int], alive: dict[int, int],
                watermark: int) -> set[int]:
        """With `spare_young` (a server's own collections, not `sls gc`): the packs of pages
        stored as they are (`pending`) that this collection leaves as they are for the next
        one, the youngest first: mostly live (at least COMPACT_BELOW), not spared by the
        last collection already, within a SPARE_SHARE-th of the pending budget, and none
        when that budget ran out. Why: the newest pages are live because the newest
        checkpoints are kept (the newest 100: a Redis group at 10 Hz keeps its last 10 s,
        ~240k pages of 100 MiB), and most are superseded by the next collection; copying
        and compressing them now was most of a collection's work, each page of them
        copied again later if it lived on. Skipping a pack frees nothing it holds, so no
        chunk is ever lost by it; the cost is disk: those pages stay whole for one
        collection more."""
        packs = self.store.packs
        if not self.spare_young or self.prune is not None or self.store.pending_over_budget():
            return set()
        room = packs.pending_budget() // SPARE_SHARE
        spared: set[int] = set()
        for number in sorted((n for n in pending if n < watermark and n not in packs.spared), reverse=True):
            if alive.get(number, 0) < COMPACT_BELOW * total.get(number, 0):
                continue
            if pending[number] > room:
                break
            room -= pending[number]
            spared.add(number)
        return spared

    def _forget(self, before_commits: int) -> list[str]:
        """Retention, or the explicit prune: the commits dropped are forgotten durably.
        The names an explicit prune drops."""
        store, now = self.store, self.now if self.now is not None else time.time()
        names: list[str] = []
        if self.prune is None:
            keep = retained(((c.id, c.time) for c in store.log()), store.tags().values(), store.retention_now,
                            now)
            if self.also_keep is not None:
                keep |= self.also_keep(keep)
        else:
            keep, names = prune_keep(store, self.prune, now, self.also_keep)
            self._say(f"forgetting {before_commits - len(keep & {c.id for c in store.log()})} checkpoints")
        store.forget(keep, sync=False)     # durable before anything is deleted (Removal)
        return names


def collect(store, *, progress: Callable[[str], None] | None = None, now: float | None = None,
            also_keep: Callable[[set[int]], set[int]] | None = None, prune: Prune | None = None,
            spare_young: bool = False) -> dict:
    """Apply retention (or `prune`), then free unreachable chunks, all at once (a
    Collection's steps run to the end, each sync waited for here). Figures for the user.
    `spare_young`: as a server's own collection (Collection._spared)."""
    collection = Collection(store, progress=progress, now=now, also_keep=also_keep, prune=prune,
                            slice_s=float("inf"), spare_young=spare_young)
    for removal in collection.steps():
        if removal is not None:
            removal.run()
    return collection.result


def prune_keep(store, prune: Prune, now: float,
               also_keep: Callable[[set[int]], set[int]] | None) -> tuple[set[int], list[str]]:
    """The commits to keep under an explicit `prune`, and the names it drops (untagged here,
    after every check passed: a refused request changes nothing).

    Kept whatever `prune` says: the newest commit, named commits not named in
    `prune.forget`, and what `also_keep` adds; asking to forget one of those is an error."""
    log = store.log()
    tags = store.tags()
    head = log[0].id if log else None
    drop: set[int] = set()
    names: list[str] = []
    for spec in prune.forget:
        if spec in tags:
            names.append(spec)
            drop.add(tags[spec])
            continue
        if not spec.isdigit():
            raise NotFound(f"--forget {spec}: no checkpoint is named {spec!r} (names: "
                           f"{', '.join(sorted(tags)) or 'none'}; ids are in `sls log`)")
        cid = int(spec)
        if cid not in {c.id for c in log}:
            raise NotFound(f"--forget {spec}: no checkpoint {cid} in the store (already thinned? see `sls log`)")
        named = sorted(n for n, t in tags.items() if t == cid)
        if named:
            raise StoreError(f"--forget {spec}: checkpoint {cid} is named {', '.join(named)}; named "
                             f"checkpoints are dropped only by name: --forget {named[0]}")
        drop.add(cid)
    if head in drop:
        raise StoreError(f"--forget: checkpoint {head} is the newest one (the current state); "
                         "it always stays")
    still_named = {cid for name, cid in tags.items() if name not in names}
    if prune.has_rules:
        keep = kept_by_rules(((c.id, c.time) for c in log), prune, now)
    else:
        keep = retained(((c.id, c.time) for c in log), (), store.retention_now, now)
    keep = (keep - drop) | still_named | ({head} if head is not None else set())
    needed = also_keep(keep) if also_keep is not None else set()
    if needed & drop:
        raise StoreError(f"--forget: checkpoint(s) {', '.join(map(str, sorted(needed & drop)))} still "
                         "in use (a persistence group's newest checkpoint, or a checkpoint whose "
                         ".sls/checkpoints/<id> a reader holds open); nothing was forgotten")
    for name in names:
        store.untag(name)
    return keep | needed, names


def usage(store) -> dict:
    """Space figures: stored vs logical bytes, dedup and compression ratios."""
    head = store.head
    roots = list(head.roots.values()) if head else []
    unique = reachable(store, roots, problems=[])
    logical = 0
    refs_total = 0
    stored_data = {cid: stored_len for cid, _n, stored_len, kind in store.packs.chunk_locations()
                   if cid in unique and kind != NODE}
    plain: dict[bytes, int] = {}
    stack = list(roots)
    seen: set[bytes] = set()
    while stack:
        cid = stack.pop()
        if cid in seen or not store.has(cid) or store.kind(cid) != NODE:
            continue
        seen.add(cid)
        children, refs = node_links(store.get(cid), cid)
        stack.extend(children)
        for r in refs:
            refs_total += 1
            if r not in plain and store.has(r):
                plain[r] = len(store.get(r)) if store.kind(r) != NODE else 0
            logical += plain.get(r, 0)
            if store.has(r) and store.kind(r) == NODE:
                stack.append(r)
    unique_plain = sum(plain.values())
    stored = sum(stored_data.values())
    return {
        "checkpoints": len(store.log()),
        "space_pressure": store.space_pressure,      # retention.squeezed's level (0: the store's policy)
        "tags": len(store.tags()),
        "volumes": len(store.volumes()),
        "chunks": len(store.packs),
        "disk_bytes": store.packs.disk_bytes(),
        "stored_data_bytes": stored,
        "logical_bytes": logical,
        "unique_bytes": unique_plain,
        "dedup_ratio": round(logical / unique_plain, 3) if unique_plain else 1.0,
        "compression_ratio": round(unique_plain / stored, 3) if stored else 1.0,
        "pending_compression_bytes": store.packs.pending_bytes(),
    }
