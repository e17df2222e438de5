"""fsck: check every record of every pack, then every tree that a commit reaches, and
that every name (tag) names a commit still there.

Problems are returned as one line each, naming the pack and offset or the chunk
and the commit, so that a user can tell what is damaged. An empty list means the
store is clean.

The store cannot see links that live inside the data of the layers above (a persistence
group's record names its "files" commit by id): such a layer adds a check of its own
with `add_link_check`, and every fsck of the process runs it after the trees.
"""
from __future__ import annotations

from typing import Callable

from .chunks import NODE
from .gc import reachable
from .tree import Tree

LinkCheck = Callable[[object], list[str]]      # (store) -> problems, one line each
_LINK_CHECKS: list[LinkCheck] = []


def add_link_check(link_check: LinkCheck) -> None:
    """Run `link_check(store)` in every fsck of this process (once, however often added)."""
    if link_check not in _LINK_CHECKS:
        _LINK_CHECKS.append(link_check)


def check(store, *, progress: Callable[[str], None] | None = None) -> list[str]:
    """Every record of every pack, then every chunk and tree node each checkpoint reaches,
    then the names: problems, one line each. The checkpoints' trees share most of their
    chunks (copy on write), so each chunk is checked once, by the first (newest)
    checkpoint that reaches it, and a damaged chunk is reported under that checkpoint
    only (`sls fsck` of a mount's store, 134 checkpoints of a 150 MiB tree, 85 MiB on disk:
    10.8 -> 0.58 s, when every checkpoint's tree was walked whole)."""
    problems = store.packs.verify_all(progress)
    roots: set[bytes] = set()
    seen: set[bytes] = set()           # chunks reached from the roots checked so far
    ranges: set = set()                # the subtrees whose order Tree.check checked
    commits = list(store.log())
    for number, commit in enumerate(commits, 1):
        if progress and (number % max(len(commits) // 100, 1) == 0 or number == len(commits)):
            progress(f"checking the checkpoints' trees: {number} of {len(commits)}")
        for name, root in sorted(commit.roots.items()):
            if root in roots:
                continue
            roots.add(root)
            where = f"checkpoint {commit.id} root {name!r}"
            if not store.has(root):
                problems.append(f"{where}: root chunk {root.hex()} is missing")
                continue
            found: list[str] = []
            reachable(store, [root], problems=found, seen=seen)
            if store.kind(root) == NODE:
                found.extend(Tree(store, root).check(ranges))     # decodes each node it reaches
            problems.extend(f"{where}: {p}" for p in dict.fromkeys(found))
    problems.extend(f"name {name!r} names checkpoint {cid}, which is gone (its record was lost or damaged): "
                    f"`--at {name}` fails; the next `sls gc` drops the name (give another checkpoint the name "
                    f"with `sls checkpoint --name {name}`)" for name, cid in sorted(store.lost_tags.items()))
    for link_check in _LINK_CHECKS:
        problems.extend(link_check(store))
    return problems
