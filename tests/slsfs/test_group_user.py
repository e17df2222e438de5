"""A group whose process runs as an unprivileged user (as PostgreSQL insists on, or a web
server's workers): the mount lets it in, its checkpoints (full, then incremental) work
without the capabilities only root has, and after a crash it is restored as that user."""
from __future__ import annotations


from group_helpers import wait_for

NOBODY = 65534
# counts in memory and in data/n, as user nobody (relative paths: nobody may not search
# the directories above the mount, a shell's `cd` would walk them)
SCRIPT = 'i=0; while :; do i=$((i+1)); echo $i > data/n.tmp; mv data/n.tmp data/n; sleep 0.01; done'


def count(store) -> int | None:
    try:
        text = (store.mnt / "data" / "n").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def test_unprivileged_group_checkpoints_and_restores(group_store):
    store = group_store
    drop = f"mkdir data && chown {NOBODY}:{NOBODY} data && exec setpriv --reuid={NOBODY} --regid={NOBODY} " \
           f"--clear-groups /bin/sh -c '{SCRIPT}'"
    store.sls("run", "--store", str(store.path), "--name", "user", "--hz", "10", "--", "/bin/sh", "-c", drop)
    wait_for(lambda: (count(store) or 0) > 30, "the unprivileged shell to count")
    assert uid_of(store.group("user")["pids"][0]) == NOBODY
    assert_checkpointing(store)

    floor = count(store)
    store.checkpoint("user")
    store.crash()
    store.sls("restore", "user", "--store", str(store.path))
    resumed = wait_for(lambda: count(store), "the restored shell's count")
    assert resumed >= floor, f"restored at {resumed}, below the checkpointed {floor}"
    wait_for(lambda: (count(store) or 0) > resumed + 20, "the restored shell to count on")
    assert uid_of(store.group("user")["pids"][0]) == NOBODY
    assert_checkpointing(store)
    store.sls("stop", "--store", str(store.path))


def assert_checkpointing(store) -> None:
    """Periodic (incremental) checkpoints go on without error."""
    first = store.group("user")["checkpoints"]
    wait_for(lambda: store.group("user")["checkpoints"] >= first + 3, "periodic checkpoints")
    assert store.group("user")["error"] == "", store.group("user")["error"]
