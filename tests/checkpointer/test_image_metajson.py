"""MetaEncoder.encode is json.dumps, byte for byte, over a sequence of metadata records
that change a little (or in type only: 1, 1.0 and True are equal in Python but not in
JSON; key order) between calls; an image records what it was given, and a writer on the
image a previous writer made re-encodes only the parts that changed."""
from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from checkpointer import image, metajson
from checkpointer.image import ImageWriter, StoredImage
from checkpointer.metajson import MetaEncoder

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.integers(), st.sampled_from([0.0, -0.0, 1.0, 2.5]),
                    st.text(max_size=4))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                      max_leaves=12)
ENTRY = st.dictionaries(st.sampled_from(["pid", "vmas", "threads", "fds", "zombie", "ü"]), VALUES, max_size=5)
META = st.fixed_dictionaries({"format": st.just("slsfs-process-image"), "version": st.just(6),
                              "created": st.floats(allow_nan=False), "processes": st.lists(ENTRY, max_size=3),
                              "files": st.lists(ENTRY | VALUES, max_size=3)})


def _retyped(value):
    """The same value to Python's ==, another in JSON: ints to floats or bools, dicts reversed."""
    if type(value) is bool:
        return int(value)
    if type(value) is int:
        return float(value) if value not in (0, 1) else bool(value)
    if type(value) is list:
        return [_retyped(v) for v in value]
    if type(value) is dict:
        return {k: _retyped(v) for k, v in reversed(value.items())}
    return value


@settings(max_examples=200, deadline=None, derandomize=True)
@given(metas=st.lists(META, min_size=1, max_size=4), retype=st.lists(st.booleans(), min_size=4, max_size=4))
def test_encode_is_json_dumps_whatever_changed(metas, retype):
    encoder = MetaEncoder()
    for meta, twist in zip(metas, retype):
        for version in (meta, _retyped(meta) if twist else meta):
            assert encoder.encode(version) == json.dumps(version)


def _process(pid: int, rip: int) -> dict:
    return {"pid": pid, "vmas": [{"start": 4096 * i, "end": 4096 * (i + 1), "kind": "anon"} for i in range(50)],
            "threads": [{"tid": pid + t, "regs": {"rip": rip if t == 0 else 7}} for t in range(4)], "zombie": False}


def test_a_writer_on_the_last_image_encodes_only_what_changed(store, monkeypatch):
    image._encoders.clear()
    files = [{"fd": n, "path": f"/tmp/f{n}"} for n in range(30)]
    first = ImageWriter(store, None).finish([_process(10, 1), _process(20, 1)], files)
    encoded: list[object] = []
    dumps = json.dumps

    def counting_dumps(value, *args, **kwargs):
        encoded.append(value)
        return dumps(value, *args, **kwargs)
    monkeypatch.setattr(metajson.json, "dumps", counting_dumps)
    processes = [_process(10, 2), _process(20, 1)]          # one thread of pid 10 moved
    processes[1]["zombie"] = 0                              # == False, but JSON 0
    second = ImageWriter(store, first).finish(processes, files)
    monkeypatch.undo()
    assert StoredImage(store, second).processes == processes
    assert json.dumps(StoredImage(store, second).processes[1]["zombie"]) == "0"
    assert StoredImage(store, second).files == files
    assert [v for v in encoded if isinstance(v, (list, dict))] == [{"rip": 2}]   # that thread's regs; the rest reused
    assert any(v == 0 and type(v) is int for v in encoded)   # the zombie's 0 (False before)
    assert (str(store.path), bytes(second)) in image._encoders   # handed on to the next writer


def test_metadata_over_a_piece_is_stored_in_pieces_and_read_back(store, monkeypatch):
    """Metadata bigger than one chunk may hold (thousands of threads' registers: 22 MB for
    stress-ng --pthread) is stored in pieces and read back whole; an incremental image
    whose metadata shrinks leaves none of its parent's extra pieces behind. Before, such
    an image was committed as one 22 MB tree value, which no restore could read."""
    monkeypatch.setattr(image, "META_PIECE", 4096)      # many pieces from small metadata
    image._encoders.clear()
    files = [{"fd": n, "path": f"/tmp/file-{n:05d}"} for n in range(2000)]
    big = ImageWriter(store, None).finish([_process(10, 1)], files)
    pieces = [k for k, _ in store.tree(big).items(b"metapieces/", b"metapieces0")]
    assert len(pieces) > 10
    assert json.loads(store.tree(big).get(b"meta"))["pieces"] == len(pieces)
    read = StoredImage(store, big)
    assert read.files == files and read.processes == [_process(10, 1)]
    small = ImageWriter(store, big).finish([_process(10, 2)], files[:3])
    assert not list(store.tree(small).items(b"metapieces/", b"metapieces0"))
    assert StoredImage(store, small).files == files[:3]

