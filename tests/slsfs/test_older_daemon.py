"""`sls` against a daemon of an older slsfs (an upgrade while a store is served): a
stand-in on the store's control socket answers as that daemon did, refusing the requests
it did not know with "unknown request"."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

from objectstore import Store

from mount.control import socket_path


@contextlib.contextmanager
def older_daemon(store: Path, replies: dict[str, dict]) -> Iterator[list[str]]:
    """A stand-in daemon answering `replies` by op and "unknown request" to the rest; the
    ops it was asked, in order."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path(store))
    listener.listen(8)
    asked: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:                   # closed: the test is over
                return
            with conn, conn.makefile("rwb") as stream:
                line = stream.readline()
                if not line:                  # a probe: is anyone listening?
                    continue
                op = json.loads(line)["op"]
                asked.append(op)
                reply = replies.get(op, {"ok": False, "error": f"unknown request {op!r}"})
                stream.write(json.dumps(reply).encode() + b"\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield asked
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        server.join(timeout=10)
        os.unlink(socket_path(store))


def test_a_restore_asked_of_a_group_daemon_older_than_the_one_request_restore_says_to_stop_it(tmp_path):
    store = tmp_path / "store"
    Store.init(store).close()
    ps = {"ok": True, "daemon": 4242, "mountpoint": str(tmp_path / "mnt"), "groups": []}
    with older_daemon(store, {"ps": ps}) as asked:
        refused = subprocess.run([sys.executable, "-m", "slsfs.cli", "restore", "web", "--store", str(store)],
                                 capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused
    assert "daemon 4242" in refused.stderr and "older than this sls" in refused.stderr, refused.stderr
    assert f"sls stop --store {store}" in refused.stderr, refused.stderr
    assert asked[0] == "restore" and "hand_over" not in asked and "shutdown" not in asked, asked
