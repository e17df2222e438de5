"""The JSON of an image's metadata record, re-encoding only the parts that changed.

What: `MetaEncoder.encode(meta)` returns exactly `json.dumps(meta)` (the same text, byte
for byte: the format is unchanged), but encodes each part of the two lists that make
most of it (each process's values, each kept file entry) only if that part differs from
the one at the same place in the previous image of the same lineage; an unchanged part
reuses its text.
Why: a group checkpoint writes the whole record (~75 KB for one Redis process) although
almost nothing in it changed since the last checkpoint (of five threads' registers one
moved; the maps, fds, files are the same): json.dumps of it was a millisecond or two of
the daemon's CPU per checkpoint, a quarter of the image's finish.
How a part is known unchanged: by its marshal serialization (5x cheaper than JSON),
compared with the previous one's. Not `==`: 1 == 1.0 == True, and dicts equal in another
key order encode differently; marshal keeps both types and order. A value marshal cannot
serialize (a subclass of int or str) is encoded every time.
A process's `threads` list is split once more, each thread's values a part: its
`xstate` alone is ~22 KB of hex on this machine (113 KB of the record's ~135 KB for a
five-thread Redis), and a thread asleep in a system call does not change between
checkpoints, so re-encoding the whole list because one thread moved was ~0.3-0.4 ms
of the daemon's CPU at every checkpoint (an idle Redis at 100 Hz).
Simplifications: parts are matched by position (a process or file entry that moved
is encoded again); only the first levels are split (a process's `vmas` list is one part).
"""
from __future__ import annotations

import json
import marshal

Place = tuple  # where a part is: ("processes", 0, "vmas"), ("files", 3)
_SPLIT = {"processes": 1, "files": 0}  # meta keys whose list is split, and how deep below an element
_SPLIT_INSIDE = {"threads": 1}          # ... and keys of a split element whose list is split again


class MetaEncoder:
    """json.dumps of metadata records, remembering the last record's parts (by place)."""

    def __init__(self) -> None:
        self._parts: dict[Place, tuple[object, str]] = {}   # place -> (str or marshal, text) of the last record

    def encode(self, meta: dict) -> str:
        """json.dumps(meta), with the parts unchanged since the last call not encoded again."""
        if not all(type(key) is str for key in meta):     # (json.dumps turns other keys to text)
            return json.dumps(meta)
        parts: dict[Place, tuple[object, str]] = {}
        items = []
        for key, value in meta.items():
            depth = _SPLIT.get(key)
            if depth is None or type(value) is not list:
                text = json.dumps(value)
            else:
                text = self._list(value, (key,), depth, parts)
            items.append(f"{json.dumps(key)}: {text}")
        self._parts = parts
        return "{" + ", ".join(items) + "}"

    def _list(self, values: list, path: Place, depth: int, parts: dict) -> str:
        out = []
        for i, value in enumerate(values):
            where = path + (i,)
            if depth > 0 and type(value) is dict and all(type(k) is str for k in value):
                text = "{" + ", ".join([self._member(k, v, where + (k,), parts) for k, v in value.items()]) + "}"
            else:
                text = self._part(value, where, parts)
            out.append(text)
        return "[" + ", ".join(out) + "]"

    def _member(self, key: str, value: object, where: Place, parts: dict) -> str:
        """'"key": value' for one value of a split element: a part (its text holds the key:
        one json.dumps less per value), or split again (_SPLIT_INSIDE)."""
        depth = _SPLIT_INSIDE.get(key)
        if depth is not None and type(value) is list:
            return f"{json.dumps(key)}: {self._list(value, where, depth, parts)}"
        return self._part(value, where, parts, key)

    def _part(self, value: object, where: Place, parts: dict, key: str | None = None) -> str:
        """The text of `value` (after '"key": ' if a key is given), reused if unchanged. A
        str is compared as it is (str == str is exact), anything else by its marshal bytes."""
        if type(value) is str:
            code: object = value
        else:
            try:
                code = marshal.dumps(value)
            except ValueError:          # not plain data (a subclass of int or str): no reuse
                code = None
        last = self._parts.get(where)
        if code is not None and last is not None and last[0] == code:
            text = last[1]
        else:
            text = json.dumps(value) if key is None else f"{json.dumps(key)}: {json.dumps(value)}"
        if code is not None:
            parts[where] = (code, text)
        return text
