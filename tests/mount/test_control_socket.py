"""The control socket answers a malformed request with a clear error and keeps serving.

A script or an older `sls` may send anything on `<store>/control.sock`; the daemon
must say what was wrong and go on answering (mount.control_server, shared by the
mount daemon and the group daemon).
"""
from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from mount.control import CONTROL_VERSION, socket_path
from mount_helpers import sls


def ask(store, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(socket_path(store)))
        sock.sendall(payload)
        return json.loads(sock.makefile("rb").readline())


@pytest.mark.parametrize("payload, says", [
    (b"not json at all\n", "bad request"),
    (b"[1, 2, 3]\n", "bad request"),                              # JSON, but not an object
    (json.dumps({"v": CONTROL_VERSION, "op": "snapshot"}).encode() + b"\n", "bad request"),  # no path
    (json.dumps({"v": 99, "op": "status"}).encode() + b"\n", "version"),
    (json.dumps({"v": CONTROL_VERSION, "op": "no-such-op"}).encode() + b"\n", "unknown request"),
])
def test_a_malformed_request_gets_a_clear_error_and_the_daemon_keeps_serving(mnt, payload, says):
    reply = ask(mnt.store, payload)
    assert reply["ok"] is False and says in reply["error"], reply
    assert "internal error" not in reply["error"]
    assert mnt.status()["pid"] == mnt.pid                   # still answering


def test_the_control_socket_is_its_owners_only(mnt):
    mode = os.stat(socket_path(mnt.store)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_a_silent_client_holds_up_no_other_request(mnt):
    """A client that connects and sends nothing (or half a request) must not keep `sls
    checkpoint` waiting: each connection is served on its own."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as half:
        silent.connect(str(socket_path(mnt.store)))
        half.connect(str(socket_path(mnt.store)))
        half.sendall(b'{"v": 1, "op": "checkp')
        (mnt.path / "f").write_text("x")
        done = sls("checkpoint", mnt.path, "--name", "beside-silent-clients", check=False)
        assert done.returncode == 0, done.stderr


def test_a_daemon_whose_socket_resets_the_request_is_told_as_one_that_closed_it(tmp_path):
    """A daemon SIGKILLed a moment ago may still accept on its socket (its threads still
    exiting) and then reset the connection: the caller gets the daemon's own ControlError,
    not a bare 'Connection reset by peer'."""
    import threading
    from mount.control import ControlError, request
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(socket_path(tmp_path)))
        listener.listen(1)

        def reset_the_first_connection():
            conn, _ = listener.accept()
            conn.recv(1)                # leaves the rest unread: the close resets the connection
            conn.close()
        dying = threading.Thread(target=reset_the_first_connection)
        dying.start()
        with pytest.raises(ControlError, match="closed the connection"):
            request(tmp_path, "status", timeout=30)
        dying.join()
