"""The daemon's readiness line (slsfs.daemon_ready, docs/FORMAT.md "Daemon readiness line"):
what the daemon writes is what `sls run` / `sls restore` read back, and a line they
cannot use is never taken for a failure nor for a status."""
import os

import pytest

from mount.control import CONTROL_VERSION
from mount.filesystem import MountError
from slsfs.daemon_ready import parse_ready_line, ready_line
from slsfs.mount_daemon import _open_ready_pipe

STATUS = {"daemon": 4242, "store": "/s", "mountpoint": "/s.mnt", "volume": "main", "durable": 7,
          "groups": [{"group": "app", "running": True, "pids": [99], "restored_from": 7}]}


def test_the_status_comes_back_as_it_was_sent():
    line = ready_line(STATUS)
    assert "\n" not in line
    assert parse_ready_line(line) == (True, STATUS)


def test_a_bare_ok_serves_without_a_status():
    assert parse_ready_line("ok") == (True, None)


def test_another_version_or_bad_json_serves_without_a_status():
    other = ready_line(STATUS).replace(f'"v": {CONTROL_VERSION}', f'"v": {CONTROL_VERSION + 1}')
    assert parse_ready_line(other) == (True, None)
    assert parse_ready_line("ok {not json") == (True, None)
    assert parse_ready_line("ok [1, 2]") == (True, None)


def test_an_error_or_nothing_is_a_failure():
    assert parse_ready_line("error: restore failed: no such group") == (False, None)
    assert parse_ready_line("") == (False, None)
    assert parse_ready_line("okay") == (False, None)


def test_a_hand_over_writes_its_ready_line_to_the_commands_pipe_only(tmp_path):
    """`sls mount`'s daemon opens the pipe a `hand_over` request names (/proc/PID/fd/N of
    the command) for its group daemon's ready line; a path that is not a pipe is refused
    and left as it was (the control socket's client names the path)."""
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    with pytest.raises(MountError, match="not a pipe"):
        _open_ready_pipe(str(victim))
    assert victim.read_text() == "keep me"
    with pytest.raises(MountError, match="cannot open"):
        _open_ready_pipe(str(tmp_path / "missing"))
    read_end, write_end = os.pipe()
    try:
        ours = _open_ready_pipe(f"/proc/{os.getpid()}/fd/{write_end}")
        os.write(ours, b"ok\n")
        os.close(ours)
        assert os.read(read_end, 10) == b"ok\n"
    finally:
        os.close(read_end)
        os.close(write_end)
