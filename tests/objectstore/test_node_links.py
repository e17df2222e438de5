"""tree.node_links (what GC's marking and send follow) reads an encoded node's children and
refs without decoding it whole: for any node, leaf or internal, it gives exactly the links
decode_node gives, and it refuses every node decode_node refuses (truncated, extended,
unknown kind or version) with CorruptChunk."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from objectstore import CorruptChunk
from objectstore.tree import Entry, _Node, decode_node, encode_node, node_links

from objectstore_helpers import DERANDOMIZE

ID = b"\x07" * 16
REF = st.binary(min_size=16, max_size=16)
LEAF = st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=60), st.lists(REF, max_size=5)), max_size=8)
INTERNAL = st.lists(st.tuples(st.binary(max_size=20), REF), min_size=1, max_size=8)


def _links(data: bytes) -> tuple[list[bytes], list[bytes]]:
    node = decode_node(data, ID)
    if node.leaf:
        return [], [r for e in node.vals for r in e.refs]
    return list(node.vals), []


@settings(max_examples=200, deadline=None, derandomize=DERANDOMIZE)
@given(leaf=st.booleans(), entries=LEAF, children=INTERNAL, cut=st.integers(0, 40), extra=st.binary(max_size=3))
def test_node_links_give_what_decode_node_gives_and_refuse_what_it_refuses(leaf, entries, children, cut, extra):
    if leaf:
        node = _Node(True, [k for k, _, _ in entries], [Entry(v, tuple(r)) for _, v, r in entries])
    else:
        node = _Node(False, [k for k, _ in children], [c for _, c in children])
    data = encode_node(node)
    assert node_links(data, ID) == _links(data)
    for damaged in (data[:max(0, len(data) - 1 - cut)], data + extra if extra else data + b"\0",
                    data[:1] + b"\x09" + data[2:], b"X" + data[1:]):
        with pytest.raises(CorruptChunk, match="malformed"):
            decode_node(damaged, ID)
        with pytest.raises(CorruptChunk, match="malformed"):
            node_links(damaged, ID)
