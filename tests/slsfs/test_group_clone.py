"""`sls restore GROUP --clone --count K`: K independent copies of one checkpoint, each on
its own O(1) clone of the checkpoint's files; `sls stop CLONE` stops one of them; copies of
a server share its listening port."""
from __future__ import annotations

import json
import socket

from group_helpers import wait_for


def value(path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def test_clones_run_independently_from_one_checkpoint(group_store, group_binaries):
    store = group_store
    store.sls("run", "--store", str(store.path), "--name", "base", "--hz", "5", "--",
              str(group_binaries / "atomic_counter"), "counter")
    wait_for(lambda: (value(store.mnt / "counter") or 0) > 20, "the target to count")
    store.sls("checkpoint", "base", "--store", str(store.path), "--name", "warm")
    out = store.sls("restore", "base", "--store", str(store.path), "--at", "warm", "--clone", "--count", "2",
                    "--json").stdout
    clones = json.loads(out)["clones"]
    assert [c["group"] for c in clones] == ["base.clone1", "base.clone2"]
    for clone in clones:
        directory = store.mnt / clone["group"]
        start = wait_for(lambda: value(directory / "counter"), f"{clone['group']}'s counter")
        wait_for(lambda: (value(directory / "counter") or 0) > start + 20, f"{clone['group']} to count on")
        assert not (directory / "counter.bad").exists(), (directory / "counter.bad").read_text()
        assert store.group(clone["group"])["running"]
    # independent: each clone writes its own file; the original runs on in the mount root
    a, b = (value(store.mnt / c["group"] / "counter") for c in clones)
    assert a is not None and b is not None
    assert store.group("base")["running"]

    # one clone stopped on its own; a restore of the original would reset the clones'
    # files and stop them: refused until asked for with --force
    assert "stopped group base.clone1" in store.sls("stop", "base.clone1", "--store", str(store.path)).stdout
    running = {g["group"] for g in store.ps()["groups"]}
    assert running == {"base", "base.clone2"}, running
    refused = store.sls("restore", "base", "--store", str(store.path), check=False)
    assert refused.returncode == 1 and "base.clone2" in refused.stderr and "--force" in refused.stderr
    assert store.group("base.clone2")["running"], "a refused restore leaves every group running"
    store.sls("restore", "base", "--store", str(store.path), "--force")
    assert {g["group"] for g in store.ps()["groups"]} == {"base"}
    store.sls("stop", "--store", str(store.path))


def _ask(port: int) -> tuple[str, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        namespace, answered = conn.makefile().readline().split()
    return namespace, int(answered)


def test_clones_of_a_server_share_its_port(group_store):
    """Copies of a listening server all serve its port (the kernel spreads connections among
    them), each from the checkpoint's memory; while the original holds the port, a clone
    request fails as a whole with the reason and leaves no copy running."""
    store = group_store
    port = store.run_tcp_server("web")
    original = {_ask(port) for _ in range(3)}
    assert [n for _, n in sorted(original, key=lambda a: a[1])] == [1, 2, 3]
    store.sls("checkpoint", "web", "--store", str(store.path), "--name", "warm")

    refused = store.sls("restore", "web", "--store", str(store.path), "--at", "warm", "--clone",
                        "--count", "2", check=False)
    assert refused.returncode == 1 and "in use" in refused.stderr and "original" in refused.stderr, refused
    assert {g["group"] for g in store.ps()["groups"]} == {"web"}

    store.sls("stop", "web", "--store", str(store.path))
    store.sls("restore", "web", "--store", str(store.path), "--at", "warm", "--clone", "--count", "2")
    answers = [_ask(port) for _ in range(60)]
    by_copy: dict[str, list[int]] = {}
    for namespace, answered in answers:
        by_copy.setdefault(namespace, []).append(answered)
    assert len(by_copy) == 2, f"connections reached {len(by_copy)} copies: {answers}"
    for counts in by_copy.values():                      # each continues the checkpoint's count
        assert counts == list(range(4, 4 + len(counts))), counts
    store.sls("stop", "--store", str(store.path))
