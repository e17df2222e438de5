"""Crash tests: a forked child writes (by put and by put_many) and commits in a loop and
is SIGKILLed at a random moment; the store must reopen clean with every acknowledged
commit intact.

The child's writes are a pure function of the step number (`expected_content`),
so the parent can check any surviving commit completely: the commit's label is
the step that produced it. Packs are sealed every 64 KiB and GC runs every few
steps, so kills also land in sealing, pack creation and compaction; in the interleaved
runs a collection is under way most of the time, a step of it between two writes, so
kills also land between its copies, its syncs and its pack deletions, with commits
made during it.

Trials: SLSFS_CRASH_TRIALS (default 200) in all, half with collections run at once and half
with collections in steps, spread over fresh stores.
Torn writes: after a clean run the last pack is cut at random offsets (its prefix index
then names records that are gone); the newest commit whose record lies wholly before
the cut must survive, complete.
A crash while a new pack is being started (empty or short pack file) is tested
on its own, since random kills hit that window only rarely.
"""
from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import time
import traceback
from pathlib import Path

import pytest

from objectstore import RetentionPolicy, Store
from objectstore import pack as fmt
from objectstore.gc import Collection

from objectstore_helpers import advance, pack_files

TRIALS = int(os.environ.get("SLSFS_CRASH_TRIALS", "200"))
TRIALS_PER_STORE = 40
KEYS = 64
KEEP_LAST = 5
GC_EVERY = 25
PACK_LIMIT = 64 << 10


def writes(step: int) -> list[int]:
    return [(step * 7 + j) % KEYS for j in range(4)]


def deletes(step: int) -> list[int]:
    return [(step * 11 + 5) % KEYS] if step % 3 == 0 else []


def data(step: int, key: int) -> bytes:
    if (step + key) % 23 == 0:  # now and then an incompressible 100 KiB chunk
        return random.Random(step * 1000 + key).randbytes(100 << 10)
    size = (step * 31 + key * 17) % 3000 + 1
    return (f"{step}:{key}:".encode() * (size // 4 + 1))[:size]


def expected_content(step: int) -> dict[int, bytes]:
    """The volume as the child leaves it after `step` (deletes come after writes)."""
    out = {}
    for key in range(KEYS):
        for t in range(step, 0, -1):
            if key in deletes(t):
                break
            if key in writes(t):
                out[key] = data(t, key)
                break
    return out


def open_tuned(path: Path, pack_limit: int = PACK_LIMIT) -> Store:
    store = Store.open(path)
    store.packs.pack_limit = pack_limit
    store.packs.prefix_index_step = 4      # prefix index segments appended often: kills land in them too
    store.retention = RetentionPolicy(keep_last=KEEP_LAST, minutely=0, hourly=0, daily=0)
    return store


def child_loop(path: Path, report: int, max_steps: int | None = None,
               pack_limit: int = PACK_LIMIT, interleave: bool = False) -> None:
    """Write, commit and report 'id step' for each commit acknowledged durable.
    `interleave`: collections run a step at a time between the writes, not all at once."""
    store = open_tuned(path, pack_limit)
    collection = None
    head = store.head
    step = int(head.label) if head else 0
    vol = store.volume("v") if "v" in store.volumes() else store.create_volume("v")
    pending: list[str] = []
    while max_steps is None or step < max_steps:
        step += 1
        keys = writes(step)
        if step % 2:   # put_many's appends must be as crash-safe as put's
            cids = store.put_many([data(step, key) for key in keys])
        else:
            cids = [store.put(data(step, key)) for key in keys]
        for key, cid in zip(keys, cids):
            vol.put(key.to_bytes(8, "big"), b"data", [cid])
        for key in deletes(step):
            vol.delete(key.to_bytes(8, "big"))
        durable = step % 4 != 0
        c = store.commit(str(step), durable=durable)
        pending.append(f"{c.id} {step}\n")
        if not durable and step % 8 == 0:
            store.barrier()
        if durable or step % 8 == 0:
            os.write(report, "".join(pending).encode())
            pending.clear()
        if interleave and (collection is not None or step % 5 == 0):
            collection = collection or Collection(store, slice_s=0).steps()
            if not advance(collection, 3):
                collection = None
        elif step % GC_EVERY == 0:
            store.gc()
    store.close()


def run_child(path: Path, max_steps: int | None = None, interleave: bool = False) -> tuple[int, int]:
    """Fork a child running child_loop; return (pid, read end of its report pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(r)
            child_loop(path, w, max_steps, interleave=interleave)
        except BaseException:
            os.write(w, ("error " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def read_reports(r: int, deadline: float | None) -> tuple[list[tuple[int, int]], bool]:
    """Read 'id step' lines until EOF or `deadline`; (acks, eof)."""
    buf = b""
    eof = False
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([r], [], [], timeout)
        if not ready:
            break
        chunk = os.read(r, 65536)
        if not chunk:
            eof = True
            break
        buf += chunk
    lines = buf.decode().splitlines()
    errors = [ln for ln in lines if ln.startswith("error ")]
    assert not errors, errors[0]
    return [tuple(map(int, ln.split())) for ln in lines], eof


def check_commit_complete(store: Store, commit) -> None:
    content = expected_content(int(commit.label))
    vol = store.tree(commit.roots["vol/v"])
    found = {int.from_bytes(k, "big"): e for k, e in vol.entries()}
    assert sorted(found) == sorted(content), f"commit {commit.id}: wrong keys"
    for key, entry in found.items():
        assert store.get(entry.refs[0]) == content[key], f"commit {commit.id} key {key}: wrong data"


def verify_after_crash(path: Path, acked: dict[int, int]) -> int:
    """Open the store, check it; return the head's step."""
    with Store.open(path) as store:
        problems = store.fsck()
        assert problems == [], problems
        head = store.head
        if not acked:
            if head is None:
                return 0
        else:
            newest = max(acked)
            assert head is not None and head.id >= newest, f"acknowledged commit {newest} lost"
        ids = {c.id for c in store.log()}
        # ids are consecutive and GC keeps the newest KEEP_LAST: none of those may be gone
        recent = set(range(max(1, head.id - KEEP_LAST + 1), head.id + 1))
        assert recent <= ids, f"commits {sorted(recent - ids)} missing"
        for cid, step in acked.items():
            if cid in ids:
                assert store.commit_by_id(cid).label == str(step)
        check_commit_complete(store, head)
        older = sorted(ids - {head.id})
        if older:
            check_commit_complete(store, store.commit_by_id(random.choice(older)))
        return int(head.label)


@pytest.fixture
def reaper():
    """Kill and reap every child a test forked, even when it fails."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.mark.parametrize("interleave", [False, True], ids=["collections_at_once", "collections_in_steps"])
def test_sigkill_at_random_moments(tmp_path, reaper, interleave):
    rng = random.Random(os.environ.get("SLSFS_CRASH_SEED", "slsfs"))
    trials_done = 0
    store_no = 0
    trials = TRIALS // 2
    while trials_done < trials:
        store_no += 1
        path = tmp_path / f"store{store_no}"
        Store.init(path).close()
        acked: dict[int, int] = {}
        steps_seen = 0
        for _ in range(min(TRIALS_PER_STORE, trials - trials_done)):
            pid, r = run_child(path, interleave=interleave)
            reaper.append(pid)
            try:
                acks, _ = read_reports(r, time.monotonic() + rng.uniform(0.0, 0.08))
                os.kill(pid, signal.SIGKILL)
                more, _ = read_reports(r, None)  # what the child acknowledged before it died
            finally:
                os.close(r)
            _, status = os.waitpid(pid, 0)
            reaper.remove(pid)
            assert os.WIFSIGNALED(status), f"child ended on its own with status {status}"
            acked.update(acks + more)
            steps_seen = verify_after_crash(path, acked)
            trials_done += 1
        assert steps_seen > 0
        shutil.rmtree(path)


def test_torn_tail_of_last_pack(tmp_path, reaper):
    rng = random.Random(7)
    clean = tmp_path / "clean"
    Store.init(clean).close()
    pid, r = run_child(clean, max_steps=90)
    reaper.append(pid)
    try:
        read_reports(r, None)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    reaper.remove(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # then a fresh last pack holding nine more steps' chunks and commits, in order, no GC
    with Store.open(clean) as store:
        store.packs.seal_active()
        before = store.head.id
    with open(os.devnull, "wb") as devnull:
        child_loop(clean, devnull.fileno(), max_steps=99, pack_limit=1 << 30)
    last = pack_files(clean)[-1]
    whole = last.read_bytes()
    commit_ends = [(rec.end, rec) for rec in fmt.scan(whole).records if rec.kind == fmt.COMMIT]
    assert len(commit_ends) == 9
    cuts = sorted(rng.randrange(fmt.PACK_HEADER.size, len(whole)) for _ in range(25))
    cuts += [end - 1 for end, _ in commit_ends[-3:]] + [end for end, _ in commit_ends[-3:]]
    for n, cut in enumerate(cuts):
        torn = tmp_path / f"torn{n}"
        shutil.copytree(clean, torn)
        os.truncate(pack_files(torn)[-1], cut)
        prefix_index_as_of(pack_files(torn)[-1], cut)
        survivors_here = [rec for end, rec in commit_ends if end <= cut]
        with Store.open(torn, readonly=True) as store:   # `sls fsck` right after the crash
            assert store.fsck() == []
        assert os.path.getsize(pack_files(torn)[-1]) == cut   # (read-only: nothing cut)
        with Store.open(torn) as store:
            assert store.fsck() == []
            head = store.head
            assert head is not None
            if survivors_here:
                assert head.id == record_commit_id(whole, survivors_here[-1])
            else:
                assert head.id == before
            check_commit_complete(store, head)
            assert os.path.getsize(pack_files(torn)[-1]) <= cut  # the torn tail was cut
            store.commit("after-repair")  # and the store takes new commits
        with Store.open(torn) as store:
            assert store.head.label == "after-repair" and store.fsck() == []
        shutil.rmtree(torn)


def prefix_index_as_of(pack: Path, size: int) -> None:
    """Cut the pack's prefix index back to the segments it had when the pack was `size`
    bytes long: those naming records that end within it (a segment is appended only once
    the records it names are durable, so a crash that tore the pack there left no later one)."""
    prefix = pack.with_suffix(".pidx")
    if not prefix.exists():
        return
    data = prefix.read_bytes()
    keep = pos = fmt.INDEX_HEADER.size
    while pos < len(data):
        (count,) = fmt.SEGMENT_COUNT.unpack_from(data, pos)
        entries = data[pos + fmt.SEGMENT_COUNT.size:pos + fmt.SEGMENT_COUNT.size + count * fmt.INDEX_ENTRY.size]
        pos += fmt.SEGMENT_COUNT.size + len(entries) + fmt.INDEX_TRAILER.size
        if any(offset + fmt.RECORD_OVERHEAD + stored > size
               for _, _, _, offset, stored, _ in fmt.INDEX_ENTRY.iter_unpack(entries)):
            break
        keep = pos
    prefix.write_bytes(data[:keep])


def record_commit_id(whole: bytes, rec: fmt.RecordInfo) -> int:
    return json.loads(whole[rec.offset + fmt.RECORD_HEADER.size:rec.end - fmt.CHECKSUM.size])["id"]


@pytest.mark.parametrize("length", [0, 5])
def test_crash_while_starting_a_pack(store_dir, length):
    """A crash between creating a new pack file and making its header durable."""
    with Store.init(store_dir) as store:
        vol = store.create_volume("v")
        vol.put(b"k", b"v", [store.put(b"data")])
        store.commit("before")
        store.packs.seal_active()
    newest = pack_files(store_dir)[-1]
    assert newest.stat().st_size == fmt.PACK_HEADER.size
    os.truncate(newest, length)
    with Store.open(store_dir, readonly=True) as store:
        assert store.head.label == "before"
    with Store.open(store_dir) as store:
        assert store.head.label == "before" and store.fsck() == []
        store.volume("v").put(b"k2", b"v", [store.put(b"more")])
        store.commit("after")
    with Store.open(store_dir) as store:
        assert store.head.label == "after" and store.fsck() == []
        assert store.get(store.volume("v").get_entry(b"k2").refs[0]) == b"more"


def test_a_read_only_fsck_reports_a_damaged_last_record_but_not_a_torn_one(tmp_path):
    """`sls fsck` opens the store read-only: the active pack's torn tail is not cut then.
    A torn last record (shorter than it says) is a crash's ordinary leftover, not damage;
    a last record all there that fails its checksum is damage, and said once."""
    path = tmp_path / "store"
    with Store.init(path) as store:
        store.put(b"x" * 5000)
        store.commit("one")
    last = pack_files(path)[-1]
    records = fmt.scan(last.read_bytes()).records
    whole = last.read_bytes()
    last.write_bytes(whole[:records[-1].end - 7])           # torn inside its last record
    with Store.open(path, readonly=True) as store:
        assert store.fsck() == []
    last.write_bytes(whole[:records[-1].end - 3] + bytes(b ^ 0xFF for b in whole[records[-1].end - 3:]))
    with Store.open(path, readonly=True) as store:
        problems = store.fsck()
    assert len(problems) == 1 and "complete but failed its checksum" in problems[0], problems
