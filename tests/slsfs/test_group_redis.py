"""Redis from Debian's packages (redis-server) as a persistence group: its dataset lives
only in memory (no RDB, no AOF), so finding it after SIGKILL of Redis and the daemon
proves that the memory came back; the restored server must answer new clients on its
loopback port (the checkpointer recreates the listening socket)."""
from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from group_helpers import wait_for

KEYS = 200
pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
                                reason="redis-server is not installed (apt-get install redis-server, "
                                       "or `make setup`, which installs SYSTEM_PACKAGES)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port: int, commands: str) -> list[str]:
    """Run redis-cli with one command per line; its replies, one per line ([] if it failed)."""
    result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)], input=commands,
                            capture_output=True, text=True, timeout=60)
    return result.stdout.splitlines() if result.returncode == 0 else []


def test_redis_dataset_survives_crash_and_answers_clients(group_store):
    store = group_store
    port = free_port()
    store.sls("run", "--store", str(store.path), "--name", "redis", "--hz", "5", "--",
              shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--daemonize", "no")
    wait_for(lambda: cli(port, "PING\n") == ["PONG"], "redis-server to answer")
    sets = "".join(f"SET key{i} value{i}\n" for i in range(KEYS))
    assert cli(port, sets) == ["OK"] * KEYS
    store.checkpoint("redis")
    store.crash()
    store.sls("restore", "redis", "--store", str(store.path))
    wait_for(lambda: cli(port, "PING\n") == ["PONG"], "the restored redis-server to answer")
    gets = "".join(f"GET key{i}\n" for i in range(KEYS))
    assert cli(port, "DBSIZE\n") == [str(KEYS)]
    assert cli(port, gets) == [f"value{i}" for i in range(KEYS)]
    assert cli(port, "SET after restore\nGET after\n") == ["OK", "restore"]
    store.sls("stop", "--store", str(store.path))
