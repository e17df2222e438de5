"""A process tree in an IPC namespace of its own (as a persistence group is) is checkpointed
with every SysV object of that namespace: semaphore values, queued messages (types, sizes,
order) and a segment nobody maps. Killed (its namespace and objects die with it, as at a
reboot) and restored, the program finds them as its memory knows them, its child blocked in
semop waits again, and the objects are under the ids the program holds. An image without an
IPC namespace (every image before version 20) is restored in the restorer's namespace."""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest

import checkpointer
from checkpointer import Unsupported, ipc_namespace, sysv_ipc
from checkpointer.sysv_msg import MSQID_QBYTES_OFFSET as MSQID_QBYTES
from ckpt_helpers import wait_for

STEP = re.compile(r"step (\d+) \d+ \d+ \d+")


def _lines(out: Path) -> list[str]:
    return out.read_text(errors="replace").splitlines() if out.exists() else []


def _last_step(out: Path) -> int:
    steps = [int(m[1]) for line in _lines(out) if (m := STEP.fullmatch(line))]
    return max(steps, default=0)


def _objects() -> dict:
    """The SysV objects of this thread's IPC namespace: what a restore makes again."""
    kept = ("key", "semid", "msqid", "shmid", "perms", "nsems", "size", "uid", "gid")
    objects = {kind: [{k: v for k, v in row.items() if k in kept} for row in sysv_ipc.table(kind)]
               for kind in ("sem", "msg", "shm")}
    objects["qbytes"] = [struct.unpack_from("Q", sysv_ipc.stat("msg", row["msqid"]), MSQID_QBYTES)[0]
                         for row in sysv_ipc.table("msg")]
    return objects


def _limits() -> dict[str, str]:
    """The IPC limits of this thread's namespace, by their paths under /proc/sys."""
    return {name: Path("/proc/sys", name).read_text().strip() for name in ipc_namespace.LIMITS}


def _bad(out: Path) -> list[str]:
    return [line for line in _lines(out) if line.startswith("BAD")]


def test_semaphores_messages_and_segments_come_back_with_the_memory_that_knows_them(procs, store, binaries,
                                                                                     tmp_path):
    out, wake = tmp_path / "ipc.out", tmp_path / "wake"
    key = 0x51500000 + os.getpid() % 0xFFFF * 4
    proc = procs.start(["unshare", "--ipc", str(binaries / "sysv_state"), str(out), hex(key), str(wake)])
    wait_for(lambda: _last_step(out) >= 100, "the target to work its semaphores and queue")
    semid, msqid, shmid = map(int, _lines(out)[0].split()[1:])
    assert key not in {row["key"] for row in sysv_ipc.table("sem")}, "the set is in the host's namespace"

    with ipc_namespace.entered(proc.pid):     # owned by another user, a queue that holds more than
        Path("/proc/sys/kernel/msgmnb").write_text("40000")   # a new namespace's default (16384)
        for kind, ident in (("sem", semid), ("msg", msqid), ("shm", shmid)):
            sysv_ipc.set_owner(kind, ident, 65534, 65533, {MSQID_QBYTES: 40000} if kind == "msg" else None)
        before = _objects()
    assert before["qbytes"] == [40000] and {row["uid"] for kind in ("sem", "msg", "shm") for row in before[kind]} \
        == {65534}
    checkpointer.checkpoint([proc.pid], store, "ipc", tree=True)
    at_checkpoint = _last_step(out)
    ipc = checkpointer.load_image(store, "ipc").processes[0]["ipc"]
    assert [(s["id"], s["key"], s["mode"], s["uid"], len(s["values"])) for s in ipc["sem"]] == \
        [(semid, key, 0o640, 65534, 3)]
    [queue] = ipc["msg"]
    assert (queue["id"], queue["key"], queue["mode"]) == (msqid, key + 1, 0o620)
    assert len(queue["messages"]) >= 8 and len({mtype for mtype, _ in queue["messages"]}) > 1
    assert len({len(text) for _, text in queue["messages"]}) > 1
    assert [(s["shmid"], s["key"], s["size"]) for s in ipc["shm"]] == [(shmid, key + 2, 8192)]

    # the objects move on past the checkpoint, then die with the namespace
    wait_for(lambda: _last_step(out) >= at_checkpoint + 100, "the target to go on past the checkpoint")
    procs.kill(proc)
    restored = checkpointer.restore(store, "ipc")
    procs.restored.append(restored)
    assert os.stat(f"/proc/{restored.pids[0]}/ns/ipc").st_ino != os.stat("/proc/self/ns/ipc").st_ino
    assert key not in {row["key"] for row in sysv_ipc.table("sem")}, "the restored set is in the host's namespace"

    with ipc_namespace.entered(restored.pids[0]):
        assert _objects() == before
    restarted = _last_step(out)
    wait_for(lambda: _bad(out) or _last_step(out) >= restarted + 150, "the restored target to go on")
    assert not _bad(out), _bad(out)
    wake.touch()
    wait_for(lambda: _bad(out) or "woken 7" in _lines(out), "the child blocked in semop to be woken")
    assert not _bad(out), _bad(out)


def test_an_image_without_an_ipc_namespace_is_restored_in_the_restorers(procs, store, binaries, tmp_path):
    """As every image of version 19 and before: made a version 19 image again (no "ipc")."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) > 3, "the counter to count")
    checkpointer.checkpoint([proc.pid], store, "host", tree=True)
    image = checkpointer.load_image(store, "host")
    assert not any("ipc" in p for p in image.processes)
    tree = store.tree(image.root)
    entry = tree.get_entry(b"meta")
    tree.put(b"meta", json.dumps({**image.meta, "version": 19}).encode(), refs=entry.refs)
    old = tree.flush()
    assert checkpointer.load_image(store, old).meta["version"] == 19
    procs.kill(proc)
    count = len(out.read_text().splitlines())
    restored = checkpointer.restore(store, old)
    procs.restored.append(restored)
    assert os.stat(f"/proc/{restored.pids[0]}/ns/ipc").st_ino == os.stat("/proc/self/ns/ipc").st_ino
    wait_for(lambda: len(out.read_text().splitlines()) > count + 3, "the restored counter to count")


def test_a_tree_over_two_ipc_namespaces_is_refused_by_name(procs, store, tmp_path):
    proc = procs.start(["unshare", "--ipc", "sh", "-c", "unshare --ipc sleep 60 & exec sleep 60"])

    def inner_in_its_own() -> bool:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        return bool(kids) and os.stat(f"/proc/{kids[0]}/ns/ipc").st_ino != os.stat(f"/proc/{proc.pid}/ns/ipc").st_ino
    wait_for(inner_in_its_own, "the inner sleep in an IPC namespace of its own")
    with pytest.raises(Unsupported, match="different IPC namespaces"):
        checkpointer.checkpoint([proc.pid], store, "two", tree=True)
    assert "img/two" not in store.roots()


def test_the_namespaces_limits_come_back_as_the_program_set_them(procs, store, binaries, tmp_path):
    """Limits set with sysctl in the namespace (raised: a message longer than a new
    namespace allows is queued; lowered: shmmni under the objects' count would refuse
    them if set before they are made) are the restored namespace's too; but
    kernel.shm_rmid_forced, which would remove the segments the restore made, with a
    warning."""
    out = tmp_path / "counter.out"
    proc = procs.start(["unshare", "--ipc", str(binaries / "counter"), str(out)])
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) > 3, "the counter to count")
    changed = {"kernel/msgmax": "20000", "kernel/msgmnb": "50000", "kernel/shmmni": "1",
               "kernel/sem": "250\t64000\t64\t200", "kernel/shm_rmid_forced": "1", "fs/mqueue/msg_max": "50",
               "fs/mqueue/msgsize_default": "4096"}
    libc = sysv_ipc.libc
    with ipc_namespace.entered(proc.pid):
        new_namespace = _limits()
        for name, value in changed.items():
            Path("/proc/sys", name).write_text(value)
        msqid = libc.msgget(0x51A00000, 0o1600)     # IPC_CREAT | 0600
        shmid = libc.shmget(0x51A00001, 4096, 0o1600)
        assert msqid >= 0 and shmid >= 0
        long_message = struct.pack("q", 7) + b"m" * 12000      # over a new namespace's msgmax (8192)
        assert libc.msgsnd(msqid, long_message, 12000, 0o4000) == 0    # IPC_NOWAIT
        Path("/proc/sys/kernel/shmmni").write_text("1")
        before = _limits()
    assert {name: before[name] for name in changed} == changed
    assert all(new_namespace[name] != value for name, value in changed.items())
    checkpointer.checkpoint([proc.pid], store, "limits", tree=True)
    procs.kill(proc)
    count = len(out.read_text().splitlines())
    restored = checkpointer.restore(store, "limits")
    procs.restored.append(restored)
    assert [w for w in restored.warnings if "shm_rmid_forced was 1" in w] == restored.warnings != []
    with ipc_namespace.entered(restored.pids[0]):
        assert _limits() == {**before, "kernel/shm_rmid_forced": "0"}
        assert [row["cbytes"] for row in sysv_ipc.table("msg")] == [12000]
        assert [row["shmid"] for row in sysv_ipc.table("shm")] == [shmid]
    wait_for(lambda: len(out.read_text().splitlines()) > count + 3, "the restored counter to count")
