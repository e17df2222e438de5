"""Garbage collection: keep what retained commits reach, compact mostly-dead packs.

Stop-the-world and single-threaded, like the Store: (1) apply the retention
policy, or an explicit `Prune` request (`sls gc --keep-last/--keep-within/--forget`:
see `prune_keep`), and record the retained commits in a catalog record; (2) mark every chunk
reachable from retained commits, the working state and trees in use; (3) rewrite
each sealed pack whose live bytes fall under `COMPACT_BELOW` of its size, copying
live chunks into the active pack, then delete it (a prune seals a mostly-dead active
pack first: on a small disk everything may sit in that one pack). Chunks keep their ids when they
move, so no commit or tree is ever rewritten.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Iterable

from . import pack as fmt
from .chunks import NODE
from .errors import NotFound, StoreError
from .retention import Prune, kept_by_rules, retained
from .tree import node_links

COMPACT_BELOW = 0.5


def reachable(store, roots: Iterable[bytes], problems: list[str] | None = None) -> set[bytes]:
    """Every chunk reachable from `roots` (node children and entry refs, recursively).
    The refs of a node are sorted by one look-up each into data chunks, marked at once,
    and the rest (nodes, and ids the store lacks, whose error is then reported as for
    any chunk): 5.7 us per live chunk before (a GC of a Redis group's store, 245k live
    chunks, 1.4 s stop-the-world), when each ref was visited as a chunk of its own."""
    seen: set[bytes] = set()
    stack = list(roots)
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
    return seen


def collect(store, *, progress: Callable[[str], None] | None = None, now: float | None = None,
            also_keep: Callable[[set[int]], set[int]] | None = None, prune: Prune | None = None) -> dict:
    """Apply retention (or `prune`), then free unreachable chunks. Returns figures for the user.

    `also_keep(kept commit ids)` names further commits to keep: those that kept
    commits point to by id inside their data (the store cannot see such links), and
    those the caller uses (browsed checkpoints, a group's newest checkpoint)."""
    started = time.monotonic()
    before_commits = len(store.log())
    now = now if now is not None else time.time()
    forgotten_names: list[str] = []
    if prune is None:
        keep = retained(((c.id, c.time) for c in store.log()), store.tags().values(), store.retention, now)
        if also_keep is not None:
            keep |= also_keep(keep)
    else:
        keep, forgotten_names = prune_keep(store, prune, now, also_keep)
        if progress:
            progress(f"forgetting {before_commits - len(keep & {c.id for c in store.log()})} checkpoints")
    catalog = store.forget(keep)
    if progress:
        progress("marking")
    live = reachable(store, store.live_roots())
    packs = store.packs
    total, alive, dead_chunks = packs.pack_usage(live)
    mostly_dead = {n for n, size in total.items() if alive.get(n, 0) < COMPACT_BELOW * size}
    if prune is not None and packs.active in mostly_dead:
        packs.seal_active()     # a small disk's dead data may all sit in the active pack
    victims = {n for n in mostly_dead if n != packs.active}
    # packs holding only store records (commits of thinned checkpoints) go too
    victims |= {n for n in packs.pack_numbers() if n not in total and n != packs.active}
    if progress:
        progress(f"compacting {len(victims)} packs")
    kept_commits = {c.id for c in store.log()}

    def keep_meta(kind: int, payload: bytes) -> bool:
        if kind == fmt.CATALOG:
            return payload == catalog  # the newest catalog supersedes older catalogs and tags
        if kind != fmt.COMMIT:
            return False
        return json.loads(payload)["id"] in kept_commits

    freed = packs.rewrite_packs(victims, lambda cid: cid in live, keep_meta)
    figures = {"commits_before": before_commits, "commits_after": len(kept_commits),
               "live_chunks": len(live), "unreachable_chunks": dead_chunks,
               "packs_compacted": len(victims), "bytes_freed": freed,
               "seconds": round(time.monotonic() - started, 3)}
    if prune is not None:
        figures["names_forgotten"] = forgotten_names
    return figures


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
        keep = retained(((c.id, c.time) for c in log), (), store.retention, now)
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
        "tags": len(store.tags()),
        "volumes": len(store.volumes()),
        "chunks": len(store.packs),
        "disk_bytes": store.packs.disk_bytes(),
        "stored_data_bytes": stored,
        "logical_bytes": logical,
        "unique_bytes": unique_plain,
        "dedup_ratio": round(logical / unique_plain, 3) if unique_plain else 1.0,
        "compression_ratio": round(unique_plain / stored, 3) if stored else 1.0,
    }
