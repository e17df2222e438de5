"""The daemon of `sls mount` (a plain mount, no group running): mount.daemon with what
slsfs keeps in a store's history. A store holds the records of persistence groups long
after they stopped; the records name their files commits by id, which the mount's own
retention and GC cannot see, so they keep what slsfs.group_retention.needed names
(without it, a plain mount thinned a stopped group's files commit away and `sls restore
GROUP --clone` answered "checkpoint N does not exist"). Importing group_retention also
makes every `sls fsck` this daemon answers check those links.

It can become the store's group daemon (slsfs.daemon) in place, asked by `sls restore`
or `sls run` (control op `hand_over {args}`, args: the group daemon's options): it
unmounts (its final checkpoint written), then runs the group daemon in the same process
on the store it holds open (and locked: no other process can take it in between), which
mounts the volume again. Why: trio, pyfuse3 and the store's
modules are imported already, ~200 ms of a new daemon's start: the issue's recovery
after a crash, `sls mount` then `sls restore GROUP`, waited for them. Not in the
foreground (`sls mount --foreground`: the user's terminal runs that daemon).

Run as `python -m slsfs.mount_daemon` with mount.daemon's arguments."""
from __future__ import annotations

import importlib
import os
import stat
import sys
import threading
import time

from objectstore import Store

from mount import daemon
from mount.filesystem import FileSystem, MountError

from . import group_retention, groups


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    asked: list[list[str]] = []

    def hand_over(fs: FileSystem, request: dict) -> dict:
        daemon_args = [str(arg) for arg in request["args"]]
        _check_named_group(fs.store, daemon_args)
        if request.get("ready") is not None:
            daemon_args += ["--ready-fd", str(_open_ready_pipe(str(request["ready"])))]
        asked.append([args[0], *daemon_args])
        return {"ready": request.get("ready") is not None}
    def become_group_daemon(store: Store) -> int | None:
        if not asked:
            return None
        started = time.perf_counter()
        os.chdir("/")                      # (not holding the directory `sls mount` ran in)
        from . import daemon as group_daemon
        group_daemon.run(asked[0], group_daemon.Startup({"imports": round((time.perf_counter() - started) * 1000, 2)}),
                         store=store)
    foreground = "--log-to-stderr" in args
    return daemon.main(argv, also_keep=group_retention.needed,
                       ending_ops=None if foreground else {"hand_over": hand_over},
                       on_serving=None if foreground else _import_group_daemon_if_groups,
                       after_unmount=become_group_daemon)


def _import_group_daemon_if_groups(fs: FileSystem) -> None:
    """If the store holds persistence groups (a mount after a crash, before `sls restore`),
    import the group daemon's modules in a thread now, while the mount is idle: ~30-100 ms
    less of the hand-over's, on the restore's path. (The trio thread imports none of them
    meanwhile: nothing it runs here uses them.)"""
    if groups.group_names(fs.store.roots()):
        threading.Thread(target=importlib.import_module, args=(f"{__package__}.daemon",),
                         name="import-group-daemon").start()


def _open_ready_pipe(path: str) -> int:
    """The command's pipe at `path` (/proc/PID/fd/N), opened for the group daemon's ready
    line; MountError (nothing changed) if it is not a pipe or cannot be opened: the
    daemon writes nothing but to a pipe."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise MountError(f"cannot open the command's ready pipe {path}: {exc.strerror}") from None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise MountError(f"{path} is not a pipe: no ready line written there")
    os.set_blocking(fd, True)
    return fd


def _check_named_group(store: Store, daemon_args: list[str]) -> None:
    """Refuse (MountError, nothing changed: the mount stays) a hand-over whose group
    daemon would refuse to start: `--restore GROUP [--at SPEC]` (unless `--or-new-at`:
    `sls run --resume` of a group with no checkpoint yet starts it) or `--like GROUP`
    naming nothing the store holds."""
    def value(flag: str) -> str | None:
        return daemon_args[daemon_args.index(flag) + 1] if flag in daemon_args[:-1] else None
    name = value("--like") or (None if "--or-new-at" in daemon_args else value("--restore"))
    if name is not None:
        try:
            groups.resolve_named(store, name, value("--at"))
        except groups.GroupError as exc:
            raise MountError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
