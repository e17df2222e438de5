"""Process trees: parents, a zombie, sessions and groups, a full pipe between two
processes, a shared output file; and a whole PID namespace restored as PID 1."""
from __future__ import annotations

import os
import signal

import pytest

import checkpointer
from checkpointer import load_image
from ckpt_helpers import (assert_unbroken, children_of, goes_on_after_a_restore, ns_pid, ok_lines, restored_goes_on,
                          state_of, wait_for)

LINE = 20


def _tree_members(root: int) -> tuple[int, int]:
    """(reader, zombie) children of the tree target's root, once both exist."""
    kids = wait_for(lambda: len(children_of(root)) == 2 and children_of(root), "the tree's two children")
    wait_for(lambda: any(state_of(k) == "Z" for k in kids), "the zombie child")
    zombie = next(k for k in kids if state_of(k) == "Z")
    return next(k for k in kids if k != zombie), zombie


def _check_image(store, name: str) -> None:
    image = load_image(store, name)
    zombies = [p for p in image.processes if p.get("zombie")]
    assert len(image.processes) == 3 and len(zombies) == 1 and zombies[0]["exit_status"] == 7 << 8
    [pipe_read] = [f for f in image.files if f["kind"] == "pipe" and f["flags"] & 3 == 0]
    assert len(image.read_blob(pipe_read["data"])) >= 4096  # the full pipe's bytes in flight
    out_files = [f for f in image.files if f["kind"] == "file"]
    assert len(out_files) == 1  # parent and reader share one open file description


def test_tree_with_zombie_groups_and_full_pipe(procs, store, binaries, tmp_path, subreaper):
    out = tmp_path / "tree.out"
    proc = procs.start([str(binaries / "tree"), str(out)])
    reader, zombie = _tree_members(proc.pid)
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "20 lines")
    checkpointer.checkpoint([proc.pid], store, "tree", tree=True)
    _check_image(store, "tree")
    assert _comm(zombie) == "tree-zombie"
    os.kill(reader, signal.SIGKILL)
    procs.kill(proc)
    subreaper([reader, zombie])
    size = out.stat().st_size
    restored = checkpointer.restore(store, "tree")
    procs.restored.append(restored)
    root, new_reader = restored.pids
    assert [ns_pid(p) for p in restored.pids] == [proc.pid, reader]
    wait_for(lambda: out.stat().st_size >= size + 20 * LINE, "the restored reader to write on")
    assert assert_unbroken(out, reader) > size // LINE
    kids = children_of(root)
    assert new_reader in kids and len(kids) == 2
    [new_zombie] = [k for k in kids if k != new_reader]
    assert state_of(new_zombie) == "Z" and ns_pid(new_zombie) == zombie
    assert _comm(new_zombie) == "tree-zombie"      # `ps` shows the zombie's own name


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().rstrip("\n")


def test_whole_pid_namespace_restored_with_pid_1(procs, store, binaries, tmp_path):
    out = tmp_path / "ns.out"
    proc = procs.start(["unshare", "--pid", "--fork", "--kill-child", str(binaries / "tree"), str(out)])
    [ns_root] = wait_for(lambda: children_of(proc.pid), "unshare's child")
    reader, _ = _tree_members(ns_root)
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "20 lines")
    reader_ns_pid = ns_pid(reader)
    checkpointer.checkpoint([ns_root], store, "ns", tree=True)
    _check_image(store, "ns")
    assert load_image(store, "ns").processes[0]["pid"] == 1
    procs.kill(proc)  # --kill-child: the namespace's PID 1 dies, and all of it
    wait_for(lambda: not os.path.exists(f"/proc/{reader}"), "the original namespace to die")
    size = out.stat().st_size
    restored = checkpointer.restore(store, "ns")
    procs.restored.append(restored)
    assert restored.ns_init is None and [ns_pid(p) for p in restored.pids] == [1, reader_ns_pid]
    wait_for(lambda: out.stat().st_size >= size + 20 * LINE, "the restored reader to write on")
    assert assert_unbroken(out, reader_ns_pid) > size // LINE


def test_processes_asleep_in_read_and_wait4(procs, store, binaries, tmp_path, subreaper):
    out = tmp_path / "sleepers.out"
    proc = procs.start([str(binaries / "sleepers"), str(out)])
    wait_for(lambda: out.exists() and out.read_text().count("asleep") == 2, "both processes asleep")
    [child] = children_of(proc.pid)
    wait_for(lambda: state_of(proc.pid) == "S" and state_of(child) == "S", "both blocked")
    checkpointer.checkpoint([proc.pid], store, "sleepers", tree=True)
    procs.kill(proc)  # SIGKILLs the process group: the parent never sees its child die
    subreaper([child])
    restored = checkpointer.restore(store, "sleepers")
    procs.restored.append(restored)
    parent, new_child = restored.pids
    os.kill(parent, signal.SIGUSR1)
    wait_for(lambda: "parent waited 5" in out.read_text() or "BAD" in out.read_text(), "the parent's wait4")
    assert out.read_text().splitlines()[2:] == ["child read x", "parent waited 5"]
    assert restored.wait(timeout=60) == 0  # the namespace empties: its PID 1 and the launcher exit


@pytest.mark.parametrize("channel", ["unix_pair", "fifo"])
def test_socketpair_or_fifo_with_bytes_in_flight(procs, store, tmp_path, subreaper, channel):
    out = tmp_path / "socket.out"
    proc = procs.python("socket_pair.py", str(out), *([str(tmp_path / "fifo")] if channel == "fifo" else []))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "20 lines")
    [child] = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, "pair", tree=True)
    ends = [f for f in load_image(store, "pair").files if f["kind"] == channel]
    assert len(ends) == 2 and sum(len(load_image(store, "pair").read_blob(f["data"])) for f in ends) > 1000
    procs.kill(proc)
    subreaper([child])
    size = out.stat().st_size
    restored = checkpointer.restore(store, "pair")
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 20 * LINE, "the restored reader to write on")
    assert assert_unbroken(out, proc.pid) > size // LINE


def test_memfd_and_shared_anonymous_memory_stay_shared_by_parent_and_child(procs, store, tmp_path, subreaper):
    out = tmp_path / "memfd.out"
    proc = procs.python("memfd_share.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "20 lines")
    [child] = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, "memfd", tree=True)
    names = sorted(f["name"] for f in load_image(store, "memfd").files if f["kind"] == "memfd")
    assert names == ["shared-anon", "shared-state"]
    restored = _kill_restore_and_go_on(procs, store, "memfd", proc, [child], out, subreaper)
    allocated = shared_memory_allocated(restored.pids[0], 256 << 20)
    assert allocated < 16 << 20, f"the untouched shared memory came back allocated: {allocated} bytes"


def test_mappings_of_deleted_files_come_back_shared_as_they_were(procs, store, tmp_path, subreaper):
    """A semaphore page in /dev/shm mapped by parent and child then unlinked (Python's
    multiprocessing), a /dev/shm file unlinked while both an fd and a mapping use it, and a
    private mapping of an unlinked file on disk: their contents are in the image and they
    come back as memfds, still shared by the processes (and the fd) that shared them."""
    out = tmp_path / "deleted.out"
    proc = procs.python("deleted_maps.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 120, "120 lines")
    [child] = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, "deleted", tree=True)
    names = sorted(f["name"] for f in load_image(store, "deleted").files if f["kind"] == "memfd")
    assert names == ["private.bin", f"slsfs-test-fd-{proc.pid}", f"slsfs-test-sem-{proc.pid}"]
    _kill_restore_and_go_on(procs, store, "deleted", proc, [child], out, subreaper)


def _kill_restore_and_go_on(procs, store, name: str, proc, children: list[int], out, subreaper):
    """Kill the target and its children, restore image `name`, and see the parent's
    progress checks go on unbroken (two of them); the restored tree."""
    procs.kill(proc)
    subreaper(children)
    size = out.stat().st_size
    restored = checkpointer.restore(store, name)
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 220 * LINE, "two of the parent's progress checks")
    assert assert_unbroken(out, proc.pid) > size // LINE + 200
    return restored


def shared_memory_allocated(pid: int, size: int) -> int:
    """Bytes allocated to the file behind the process's shared mapping of `size` bytes."""
    for name in os.listdir(f"/proc/{pid}/map_files"):
        start, end = (int(x, 16) for x in name.split("-"))
        if end - start == size:
            return os.stat(f"/proc/{pid}/map_files/{name}").st_blocks * 512
    raise AssertionError(f"no mapping of {size} bytes in process {pid}")


@pytest.mark.parametrize("reboot", [True, False], ids=["removed_by_a_reboot", "left_by_the_dead_process"])
def test_posix_shared_memory_comes_back_as_it_was(procs, store, tmp_path, reboot):
    """A reboot empties /dev/shm: the segment is made again from the image. Without one, the
    dead process left it as it was after the checkpoint: it is set back (the target checks
    that its memory and the segment agree). A second copy while one runs is refused."""
    out, name = tmp_path / "pshm.out", f"/slsfs-test-{os.getpid()}-pshm"
    proc = procs.python("posix_shm.py", str(out), name)
    try:
        wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "20 lines")
        checkpointer.checkpoint([proc.pid], store, "pshm")
        counted = len(ok_lines(out))
        wait_for(lambda: len(ok_lines(out)) >= counted + 20, "the segment to move on")
        procs.kill(proc)
        if reboot:
            os.unlink(f"/dev/shm{name}")
        size = out.stat().st_size
        restored = checkpointer.restore(store, "pshm")
        procs.restored.append(restored)
        wait_for(lambda: out.stat().st_size >= size + 20 * LINE, "the restored process to count on")
        assert assert_unbroken(out, proc.pid) > size // LINE
        assert os.stat(f"/dev/shm{name}").st_mode & 0o777 == 0o600
        with pytest.raises(checkpointer.CheckpointError, match="in use by running process"):
            procs.restored.append(checkpointer.restore(store, "pshm"))
        size = out.stat().st_size
        wait_for(lambda: out.stat().st_size >= size + 10 * LINE, "the restored process to count on undisturbed")
        assert assert_unbroken(out, proc.pid) > size // LINE
    finally:
        if os.path.exists(f"/dev/shm{name}"):
            os.unlink(f"/dev/shm{name}")


def test_zombies_keep_their_process_groups(procs, store, binaries, tmp_path):
    """A zombie that led its own group, and one left in a group whose leader is gone (zdtm
    zombie01), are in those groups again after a restore (the target checks getpgid)."""
    out = tmp_path / "zombies.out"
    proc = procs.start([str(binaries / "zombie_groups"), str(out)])
    goes_on_after_a_restore(procs, store, proc, out, "zombies", "the target's zombies", tree=True)


@pytest.mark.parametrize("leader", ["alive", "zombie"])
def test_an_orphan_keeps_its_session_under_the_subreaper_it_was_left_to(procs, store, binaries, tmp_path,
                                                                         subreaper, leader):
    """A process whose parent exited, re-parented to a subreaper outside its session (zdtm
    session00 under a namespace's init), comes back as that subreaper's child in its own
    session and group (the target checks getppid, getsid and getpgid); so does one whose
    session leader has exited too, a zombie its parent has not reaped (zdtm session03: it
    came back in its parent's session, with a warning)."""
    out = tmp_path / "orphan.out"
    proc = procs.start([str(binaries / "orphan_in_session"), str(out)] + (["zombie"] if leader == "zombie" else []))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the orphan's lines")
    members = children_of(proc.pid)
    assert len(members) == 2       # the session leader and the orphan
    if leader == "zombie":
        wait_for(lambda: "Z" in [state_of(pid) for pid in members], "the session leader to exit")
    checkpointer.checkpoint([proc.pid], store, "orphan", tree=True)
    for pid in members:            # first: the orphan would see its parent die
        os.kill(pid, signal.SIGKILL)
    procs.kill(proc)
    subreaper(members)
    restored = restored_goes_on(procs, store, "orphan", out)
    root = restored.pids[0]
    assert sorted(ns_pid(p) for p in children_of(root)) == sorted(members)
    assert not restored.warnings
