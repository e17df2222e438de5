"""`sls checkpoint PID`, `sls ps`, `sls restore NAME` through the real command line."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from checkpointer import LAZY_FROM_BYTES, CheckpointError
from checkpointer.lazy import check_served
from ckpt_helpers import BIG_HEAP, HEAP_CHECK_LINES, assert_unbroken, ns_pid, ok_lines, wait_for


def sls(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "sls"), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def cli_store(tmp_path):
    path = tmp_path / "store"
    assert sls("init", str(path)).returncode == 0
    return str(path)


def test_checkpoint_ps_restore_detached(procs, cli_store, binaries, tmp_path, subreaper):
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "10 lines")
    done = sls("checkpoint", str(proc.pid), "--store", cli_store, "--name", "c1")
    assert done.returncode == 0, done.stderr
    assert "image 'c1' of 1 process" in done.stdout and "file contents are not part of the image" in done.stdout
    assert "SysV semaphores and message queues of the host's IPC namespace are not part" in done.stdout
    listed = json.loads(sls("ps", "--store", cli_store, "--json").stdout)
    [image] = listed["images"]
    assert image["name"] == "c1" and image["processes"][0]["pid"] == proc.pid
    header, row = sls("ps", "--store", cli_store).stdout.splitlines()[-2:]
    assert header.split() == ["IMAGE", "CREATED", "PAGES", "PROCESSES"] and row.split()[0] == "c1"
    named = sls("checkpoint", str(proc.pid), "--store", cli_store, "--name", "a-much-longer-image-name-than-24")
    assert named.returncode == 0, named.stderr
    rows = sls("ps", "--store", cli_store).stdout.splitlines()
    assert [line.split()[0] for line in rows[-2:]] == ["a-much-longer-image-name-than-24", "c1"], rows
    missing = sls("restore", "c2", "--store", cli_store)
    assert missing.returncode == 1 and "images: a-much-longer-image-name-than-24, c1" in missing.stderr
    procs.kill(proc)
    size = out.stat().st_size
    done = sls("restore", "c1", "--store", cli_store, "--detach", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    try:
        assert doc["lazy"] is False     # a small image (below LAZY_FROM_BYTES): eager by default
        log = Path(cli_store) / "daemon.log"    # (a daemon was asked first for a group c1: refused, no error)
        assert " ERROR " not in (log.read_text() if log.exists() else ""), log.read_text()
        [pid] = doc["pids"]
        assert ns_pid(pid) == proc.pid
        wait_for(lambda: out.stat().st_size >= size + 400, "the restored counter to write on")
        assert assert_unbroken(out, proc.pid) > size // 20
    finally:
        os.kill(doc["ns_init"], signal.SIGKILL)  # PID 1 of the namespace: takes the counter along
        subreaper([doc["launcher"]])  # an orphan now: this test reaps it


@pytest.mark.parametrize("told, status", [("3", 3), ("TERM", 128 + signal.SIGTERM)])
def test_restore_without_detach_exits_as_the_restored_process_did(procs, cli_store, tmp_path, told, status):
    """`sls restore` waits for the restored process and ends with its exit status (or 128 +
    the signal that killed it, as a shell reports it), not always 0."""
    out = tmp_path / "told.out"
    proc = procs.python("exits_when_told.py", str(out))
    wait_for(lambda: out.exists() and out.read_text() == "waiting\n", "the target to wait")
    assert sls("checkpoint", str(proc.pid), "--store", cli_store, "--name", "t").returncode == 0
    procs.kill(proc)
    restore = subprocess.Popen([str(Path(sys.executable).parent / "sls"), "restore", "t", "--store", cli_store],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: restore.poll() is not None or "running" in (restore.stdout.readline() or ""),
                 "the restore to report the process running")
        Path(f"{out}.tmp").write_text(told)
        Path(f"{out}.tmp").rename(f"{out}.go")      # whole when it appears
        assert restore.wait(timeout=60) == status, restore.stderr.read()
    finally:
        restore.kill()
        restore.wait()


def test_a_restore_waiting_for_its_processes_holds_no_pack_file(procs, cli_store, binaries, tmp_path):
    """`sls restore IMAGE` without --detach waits as long as its processes run: it holds no
    pack file of the store meanwhile (one the store's GC deleted would keep its space)."""
    out = tmp_path / "counter.out"
    proc = procs.start([str(binaries / "counter"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 3, "3 lines")
    assert sls("checkpoint", str(proc.pid), "--store", cli_store, "--name", "w").returncode == 0
    procs.kill(proc)
    size = out.stat().st_size
    command = subprocess.Popen([str(Path(sys.executable).parent / "sls"), "restore", "w", "--store", cli_store],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=_interruptible)
    try:
        # its line says the restore is done and it waits (a ^C before that interrupts the
        # restore itself: another case)
        assert "running (waiting until it exits" in command.stdout.readline().decode()
        wait_for(lambda: out.stat().st_size >= size + 100, "the restored counter to write on")
        packs = os.path.realpath(os.path.join(cli_store, "packs")) + "/"
        held = []
        for fd in os.listdir(f"/proc/{command.pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                held.append(os.readlink(f"/proc/{command.pid}/fd/{fd}"))
        assert command.poll() is None and not [path for path in held if path.startswith(packs)], held
    finally:
        command.send_signal(signal.SIGINT)      # ^C: the command kills what it restored, then exits
        command.wait(timeout=60)
        command.stdout.close()


def _interruptible() -> None:
    """A ^C reaches the command even when this suite runs with SIGINT ignored (started with
    `&` from a script, as a background job: its children inherit the ignoring, and Python
    then installs no handler of its own)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_restore_help_names_the_size_from_which_it_is_lazy():
    assert f"({LAZY_FROM_BYTES >> 20} MiB or more)" in " ".join(sls("restore", "--help").stdout.split())
    done = sls("restore", "x", "--store", "/nowhere", "--lazy", "--eager")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_cli_errors_are_one_clear_line(cli_store):
    done = sls("checkpoint", "999999999", "--store", cli_store)
    assert done.returncode == 1 and done.stderr.startswith("sls: no process 999999999: ")
    assert done.stderr.count("\n") == 1
    done = sls("restore", "nothing", "--store", cli_store, "--detach")
    assert done.returncode == 1 and done.stderr.startswith("sls: ")
    done = sls("checkpoint", "1", "--store", str(cli_store) + "-missing")
    assert done.returncode == 1 and "is not a slsfs store" in done.stderr
    for hold in (["--hold", "5"], ["--kill", "--hold", "0"]):
        done = sls("checkpoint", "1", "--store", cli_store, *hold)
        assert done.returncode == 1 and done.stderr.startswith("sls: --hold SECONDS (more than 0) applies to --kill")


@pytest.mark.parametrize("how, lazy", [("--lazy", True), (None, True), ("--eager", False)])
def test_restore_lazy_from_the_command_line(procs, cli_store, binaries, tmp_path, subreaper, how, lazy):
    """A 64 MiB image is restored lazily when asked (--lazy) and by default (it holds more
    than LAZY_FROM_BYTES of pages), eagerly with --eager; each runs on from where it was."""
    out = tmp_path / "heap.out"
    proc = procs.start([str(binaries / "counter"), str(out), *BIG_HEAP])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 5, "5 lines")
    assert sls("checkpoint", str(proc.pid), "--store", cli_store, "--name", "big").returncode == 0
    procs.kill(proc)
    size = out.stat().st_size
    done = sls("restore", "big", "--store", cli_store, "--detach", *([how] if how else []), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    try:
        assert doc["lazy"] is lazy
        if lazy:
            # the command's output (read to its end: both pipes closed) came while its page
            # server was still serving, which it would not had the server held the pipes
            with pytest.raises(CheckpointError, match="still coming in"):
                check_served(doc["pids"][0])
        else:
            check_served(doc["pids"][0])    # all its memory written before it ran
        wait_for(lambda: out.stat().st_size >= size + HEAP_CHECK_LINES * 20,
                 "the lazily restored counter to cover its heap")
        assert assert_unbroken(out, proc.pid) >= size // 20 + HEAP_CHECK_LINES
    finally:
        os.kill(doc["ns_init"], signal.SIGKILL)
        subreaper([doc["launcher"]])


def test_checkpoint_refuses_at_once_a_pid_no_checkpoint_could_take(cli_store, procs):
    """No such process, a kernel thread, and the command's own ancestors (its tree would hold
    the command: `sls checkpoint $$` from a shell) get a one-line reason and no image."""
    dead = procs.start(["true"])
    dead.wait()
    for pid, reason in ((dead.pid, f"no process {dead.pid}"), (2, "is a kernel thread"),
                        (os.getpid(), "is this command or one of its ancestors"),
                        (1, "is this command or one of its ancestors")):
        done = sls("checkpoint", str(pid), "--store", cli_store)
        assert done.returncode != 0 and reason in done.stderr, (pid, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert json.loads(sls("ps", "--store", cli_store, "--json").stdout)["images"] == []


RANDOM_HEAP = """
import random, sys, time
heap = bytearray(random.Random(7).randbytes(16 << 20))   # random: stored as it is (lz4 cannot shrink it)
open(sys.argv[1], "w").close()
time.sleep(600)
"""


def test_a_lazy_restores_page_server_tells_its_error_in_the_stores_log(procs, cli_store, tmp_path, subreaper):
    """`sls restore IMAGE --lazy --detach` with its stderr a pipe (read to its end): the
    page server, still serving after the command returned, meets a corrupt chunk; why it
    failed is in STORE/page-server.log (it was sent to /dev/null with the pipe), and the
    processes it served are killed, never run on missing memory."""
    ready = tmp_path / "ready"
    proc = procs.start([sys.executable, "-c", RANDOM_HEAP, str(ready)])
    wait_for(ready.exists, "the target's heap")
    assert sls("checkpoint", str(proc.pid), "--store", cli_store, "--name", "heap").returncode == 0
    procs.kill(proc)
    marker = random.Random(7).randbytes(16 << 20)[12 << 20:(12 << 20) + 64]    # a page near the heap's end
    [(pack, offset)] = [(pack, at) for pack in Path(cli_store, "packs").glob("*.pack")
                        if (at := pack.read_bytes().find(marker)) >= 0]
    with open(pack, "r+b") as f:
        f.seek(offset)
        f.write(bytes([marker[0] ^ 0xFF]))
    done = sls("restore", "heap", "--store", cli_store, "--detach", "--lazy", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    try:
        log = Path(cli_store) / "page-server.log"
        wait_for(lambda: log.exists() and "sls page server" in log.read_text(), "the page server's error in its log")
        assert "corrupt" in log.read_text() or "checksum" in log.read_text(), log.read_text()
        wait_for(lambda: not Path(f"/proc/{doc['pids'][0]}/maps").exists() or
                 Path(f"/proc/{doc['pids'][0]}/maps").read_text() == "", "the served process to be killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(doc["ns_init"], signal.SIGKILL)
        subreaper([doc["launcher"]])
