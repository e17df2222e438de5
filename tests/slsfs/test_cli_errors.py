"""A command given a path that is no store and in no mount fails with one line that says
so (exit status 1), never a Python traceback: `sls clone` outside a mount printed one."""
from __future__ import annotations

import subprocess
import sys

import pytest

from slsfs.cli import VERBS as SLS_VERBS

VERBS = [["clone", "{d}/a", "{d}/b"], ["snapshot", "{d}"], ["checkpoint", "{d}"], ["log", "{d}"],
         ["stat", "{d}"], ["gc", "{d}"], ["fsck", "{d}"], ["umount", "{d}"]]


@pytest.mark.parametrize("verb", VERBS, ids=[v[0] for v in VERBS])
def test_a_path_outside_any_mount_is_a_one_line_error(tmp_path, verb):
    (tmp_path / "a").mkdir()
    args = [a.format(d=tmp_path) for a in verb]
    result = subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("sls: ") and str(tmp_path) in line and "mount" in line, line


ONE_VERB = """
import sys
from slsfs.cli import build_parser, main
status = main(sys.argv[1:])
print(" ".join(sorted(m for m in sys.modules if m.startswith("slsfs."))))
build_parser().parse_args(["restore", "x"])     # every verb's parser, built on demand, still works
"""


@pytest.mark.parametrize("args, unneeded", [
    (["restore", "g", "--store", "{d}"], ["slsfs.fs_commands", "slsfs.store_commands"]),
    (["ps", "--store", "{d}"], ["slsfs.fs_commands", "slsfs.store_commands"]),
    (["stat", "{d}"], ["slsfs.group_commands", "slsfs.proc_commands", "slsfs.store_commands"]),
], ids=["restore", "ps", "stat"])
def test_a_command_imports_only_its_verbs_modules(tmp_path, args, unneeded):
    """`sls VERB` builds (and imports the modules of) its own verb only: all four verb
    modules cost `sls restore` ~50 ms of imports on the path of a restore after a crash.
    `sls --help` and a mistyped verb still list every verb."""
    result = subprocess.run([sys.executable, "-c", ONE_VERB, *(a.format(d=tmp_path) for a in args)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result
    imported = result.stdout.split()
    assert not set(unneeded) & set(imported), imported
    listed = subprocess.run([sys.executable, "-m", "slsfs.cli", "nosuch"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 2 and all(f"'{verb}'" in listed.stderr for verb in SLS_VERBS), listed.stderr
    helped = subprocess.run([sys.executable, "-m", "slsfs.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert all(f"    {verb} " in helped.stdout or f"    {verb}\n" in helped.stdout for verb in SLS_VERBS), helped.stdout


def _sls(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slsfs.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("verb", ["log", "stat", "fsck", "gc"])
def test_the_store_verbs_take_the_store_as_the_group_verbs_do(tmp_path, verb):
    """`sls log --store S` (as `sls ps --store S`, `sls restore G --store S`) works as
    `sls log S`; naming none, or both, is a one-line error saying how."""
    store = str(tmp_path / "store")
    assert _sls("init", store).returncode == 0
    positional, option = _sls(verb, store, "--json"), _sls(verb, "--store", store, "--json")
    assert positional.returncode == option.returncode == 0, (positional, option)
    if verb != "gc":                     # (a collection's figures include its own duration)
        assert positional.stdout == option.stdout
    for args in ([], [store, "--store", store]):
        refused = _sls(verb, *args)
        assert refused.returncode == 1 and refused.stderr.startswith("sls: ") and "--store" in refused.stderr, refused


def test_send_help_speaks_of_checkpoint_names_as_the_other_verbs_do():
    """The README and `sls checkpoint --name` say "name"; `sls send --help` said "tag"."""
    helped = _sls("send", "--help")
    assert helped.returncode == 0 and "tag" not in helped.stdout and "name" in helped.stdout, helped.stdout
    assert "tag" not in _sls("checkpoint", "--help").stdout


def test_recv_from_a_terminal_says_to_pipe_a_stream_in(tmp_path):
    """`sls recv STORE` typed without a stream waited for one on the terminal (sls send
    refuses to write a stream to a terminal): it says what to give instead."""
    import os
    import pty
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "slsfs.cli", "recv", str(tmp_path / "store")],
                                stdin=terminal, capture_output=True, text=True, timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 1 and "-i FILE" in result.stderr and "sls send" in result.stderr, result
    assert not (tmp_path / "store").exists()


def test_a_file_given_as_mount_point_is_refused_before_anything_starts(tmp_path):
    """`sls run --mountpoint FILE` started a daemon that failed ("[Errno 17] File exists");
    `sls mount STORE FILE` said to create a directory that was there as a file."""
    store, afile = str(tmp_path / "store"), tmp_path / "afile"
    afile.write_text("")
    assert _sls("init", store).returncode == 0
    for args in (["run", "--store", store, "--mountpoint", str(afile), "--", "true"], ["mount", store, str(afile)]):
        refused = _sls(*args)
        assert refused.returncode == 1 and "is not a directory: give a directory" in refused.stderr, refused
    assert "no daemon runs" in _sls("ps", "--store", store).stdout
