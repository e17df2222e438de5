"""Garbage collection: keep what retained commits reach, compact mostly-dead packs.

Stop-the-world and single-threaded, like the Store: (1) apply the retention
policy and record the retained commits in a catalog record; (2) mark every chunk
reachable from retained commits, the working state and trees in use; (3) rewrite
each sealed pack whose live bytes fall under `COMPACT_BELOW` of its size, copying
live chunks into the active pack, then delete it. Chunks keep their ids when they
move, so no commit or tree is ever rewritten.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Iterable

from . import pack as fmt
from .chunks import NODE
from .errors import StoreError
from .retention import retained
from .tree import node_links

COMPACT_BELOW = 0.5


def reachable(store, roots: Iterable[bytes], problems: list[str] | None = None) -> set[bytes]:
    """Every chunk reachable from `roots` (node children and entry refs, recursively)."""
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
        stack.extend(r for r in refs if r not in seen)
    return seen


def collect(store, *, progress: Callable[[str], None] | None = None, now: float | None = None,
            also_keep: Callable[[set[int]], set[int]] | None = None) -> dict:
    """Apply retention, then free unreachable chunks. Returns figures for the user.

    `also_keep(kept commit ids)` names further commits to keep: those that kept
    commits point to by id inside their data (the store cannot see such links)."""
    started = time.monotonic()
    before_commits = len(store.log())
    keep = retained(((c.id, c.time) for c in store.log()), store.tags().values(),
                    store.retention, now if now is not None else time.time())
    if also_keep is not None:
        keep |= also_keep(keep)
    catalog = store.forget(keep)
    if progress:
        progress("marking")
    live = reachable(store, store.live_roots())
    packs = store.packs
    total: dict[int, int] = {}
    alive: dict[int, int] = {}
    dead_chunks = 0
    for cid, number, stored_len, _kind in packs.chunk_locations():
        total[number] = total.get(number, 0) + stored_len
        if cid in live:
            alive[number] = alive.get(number, 0) + stored_len
        else:
            dead_chunks += 1
    victims = {n for n, size in total.items()
               if n != packs.active and alive.get(n, 0) < COMPACT_BELOW * size}
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
    return {"commits_before": before_commits, "commits_after": len(kept_commits),
            "live_chunks": len(live), "unreachable_chunks": dead_chunks,
            "packs_compacted": len(victims), "bytes_freed": freed,
            "seconds": round(time.monotonic() - started, 3)}


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
