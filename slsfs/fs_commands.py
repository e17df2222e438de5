"""The file-system verbs of `sls`: init, mount, umount, checkpoint, log, snapshot, clone,
diff, gc, fsck, stat.

Verbs that act on a mounted file system talk to its daemon over the control socket
(`mount.control`); gc, fsck, stat and log work on an unmounted store directly and on
a mounted one through its daemon (which holds the store's writer lock). `sls gc
--keep-last N / --keep-within D / --forget ID|NAME` drops history the retention policy
would keep, to free space on a full disk (objectstore.retention.Prune).

`mount_helper` is the `slsfs` program (a console script) that mount.fuse3 runs for
`mount -t fuse.slsfs STORE MNT -o volume=V` and fstab lines of type fuse.slsfs; it
must be on root's PATH (`make install` links it into /usr/local/sbin).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from objectstore import Store, StoreError
from objectstore.retention import Prune, RetentionPolicy, parse_duration

from mount.control import (ControlError, MountInfo, canonical_mountpoint, connect_unix, find_mount, mount_state,
                           request, slsfs_mounts, socket_path)
from mount.options import (ATIME_MOUNT_OPTIONS, DEFAULT_INTERVAL_MS, KERNEL_MOUNT_OPTIONS, LOG_NAME,
                           PER_MOUNT_OPTIONS, last_wins)

from . import dying_daemon, group_retention, orphans, progress
from .cli import CommandError, add_json_flag, store_path
from .daemon_ready import DAEMON_MODULE_FLAGS, read_line
from .mount_namespaces import copies_elsewhere
from .mount_users import open_files, refuse_while_busy

MOUNT_TIMEOUT_S = 60.0
UMOUNT_BUSY_RETRY_S = 2.0      # an unmount refused as busy is tried again for this long
UMOUNT_TIMEOUT_S = 120.0
ELSEWHERE_CHECK_S = 1.0        # how often an unmount waiting for its daemon looks for copies elsewhere
MOUNT_DAEMON_MODULE = "slsfs.mount_daemon"


def build(verb: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of `verb` (one of ours: slsfs.cli.VERBS) to its parser."""
    {"init": _init_args, "mount": _mount_args, "umount": _umount_args, "checkpoint": _checkpoint_args,
     "log": _log_args, "snapshot": _snapshot_args, "clone": _clone_args, "diff": _diff_args,
     "gc": _gc_args, "fsck": _fsck_args, "stat": _stat_args, "retention": _retention_args}[verb](p)


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("store")
    p.add_argument("--volume", default="main", help="name of the first volume (default: main)")
    p.set_defaults(func=cmd_init)


def _mount_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("store")
    p.add_argument("mountpoint")
    p.add_argument("--volume", default="main")
    p.add_argument("--foreground", action="store_true", help="serve in this process until unmounted")
    p.add_argument("--allow-other", action="store_true", help="let other users use the mount")
    p.add_argument("--checkpoint-interval", type=float, metavar="MS",
                   help=f"checkpoint every MS milliseconds when changed (default {DEFAULT_INTERVAL_MS}; 0: never)")
    p.add_argument("--force", action="store_true",
                   help="replace a stale mount of another store left by a dead daemon (this store's is replaced anyway)")
    p.set_defaults(func=cmd_mount)


def _umount_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint")
    p.add_argument("--force", action="store_true", help="detach even with open files (lazy unmount) or copies of the mount in other mount "
                        "namespaces (its daemon then stops; those copies fail)")
    p.set_defaults(func=cmd_umount)


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint")
    p.add_argument("--name", help="name it; named checkpoints are kept forever")
    add_json_flag(p)
    p.set_defaults(func=cmd_checkpoint)


def _log_args(p: argparse.ArgumentParser) -> None:
    _store_target_args(p)
    p.add_argument("-n", "--limit", type=int, default=50, help="show at most N (0: all)")
    p.set_defaults(func=cmd_log)


def _snapshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory")
    p.add_argument("--name")
    add_json_flag(p)
    p.set_defaults(func=cmd_snapshot)


def _clone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src")
    p.add_argument("dest")
    add_json_flag(p)
    p.set_defaults(func=cmd_clone)


def _diff_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Compare two checkpoints of a mount (an id, a name, latest, latest~N, "
                     "an ISO-8601 time; in a group's mount also GROUP#N, or #N with one "
                     "group: its files at that checkpoint's freeze), from the store's trees, "
                     "reading only what changed; or two directories (walked).")
    p.add_argument("a", help="the older checkpoint, or a directory")
    p.add_argument("b", help="the newer checkpoint, or a directory")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--mount", help="the mount whose checkpoints A and B are (default: the one the "
                                       "current directory is in, when A and B are not directories)")
    where.add_argument("--store", help="the store whose checkpoints A and B are (asked of its daemon if "
                                       "one runs: a group's, or sls mount's), as the group verbs name it")
    add_json_flag(p)
    p.set_defaults(func=cmd_diff)


def _store_target_args(p: argparse.ArgumentParser) -> None:
    """log, gc, fsck, stat: a store or a mount point of one, given as the argument or, as
    the group verbs name a store, with --store (`sls log --store S` was refused)."""
    p.add_argument("target", nargs="?", help="a store directory or a mount point")
    p.add_argument("--store", help="the store (the same as giving it as the argument)")
    add_json_flag(p)


def _target(args) -> str:
    """The store or mount point a log, gc, fsck or stat command names (_store_target_args)."""
    if (args.target is None) == (args.store is None):
        raise CommandError(f"name one store or mount point: sls {args.command} STORE (or --store STORE, "
                           f"or a mount point)")
    return args.target if args.store is None else store_path(args.store)


def _gc_args(p: argparse.ArgumentParser) -> None:
    _store_target_args(p)
    p.set_defaults(func=cmd_gc)
    _prune_flags(p)


def _retention_args(p: argparse.ArgumentParser) -> None:
    _store_target_args(p)
    p.set_defaults(func=cmd_retention)
    default = RetentionPolicy()
    for field, help_text in (("keep_last", f"keep the newest N checkpoints (default {default.keep_last})"),
                             ("minutely", f"then one a minute for N minutes (default {default.minutely})"),
                             ("hourly", f"then one an hour for N hours (default {default.hourly})"),
                             ("daily", f"then one a day for N days (default {default.daily})")):
        p.add_argument(f"--{field.replace('_', '-')}", dest=field, type=int, metavar="N", help=help_text)


def _fsck_args(p: argparse.ArgumentParser) -> None:
    _store_target_args(p)
    p.set_defaults(func=cmd_fsck)


def _stat_args(p: argparse.ArgumentParser) -> None:
    _store_target_args(p)
    p.set_defaults(func=cmd_stat)


def _prune_flags(p: argparse.ArgumentParser) -> None:
    """`sls gc` options that drop history to free space (like restic forget + prune)."""
    p.add_argument("--keep-last", type=int, metavar="N",
                   help="drop unnamed checkpoints older than the newest N (and than --keep-within)")
    p.add_argument("--keep-within", metavar="DURATION",
                   help="drop unnamed checkpoints older than DURATION (90s, 30m, 2h, 1d12h, 1w)")
    p.add_argument("--forget", action="append", default=[], metavar="ID|NAME",
                   help="drop this checkpoint (repeatable); a named one only by its name")


def _print(args, doc: dict, human: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if args.json else human)


def _control(where: str, op: str, **fields) -> tuple[dict, str]:
    """Send `op` to the daemon of the mount holding path `where`; (reply, relative path)."""
    try:
        info, rel = find_mount(where)
        return request(info.store, op, **fields), rel
    except ControlError as exc:
        raise CommandError(str(exc)) from None


def _relpath(path: str) -> str:
    try:
        return find_mount(path)[1]
    except ControlError as exc:
        raise CommandError(str(exc)) from None


# ----- init, mount, umount -------------------------------------------------------------
def cmd_init(args) -> int:
    with Store.init(args.store) as store:
        from mount.filesystem import ensure_volume     # loads FUSE: only when needed
        ensure_volume(store, args.volume)
    print(f"created store {args.store} with volume {args.volume!r}; mount it with "
          f"`sls mount {shlex.quote(args.store)} MNT`")
    return 0


def _detach(mountpoint: str) -> None:
    result = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
    if result.returncode != 0:
        raise CommandError(f"could not detach {mountpoint}: {result.stderr.strip()}")


def cmd_mount(args) -> int:
    store, mountpoint = store_path(args.store), os.path.abspath(args.mountpoint)
    dying_daemon.release(store)
    _wait_for_unmounted_daemon(store)
    state = mount_state(mountpoint)
    if state == "free" and not os.path.isdir(mountpoint):
        raise CommandError(f"mount point {mountpoint} is not a directory: give a directory" if os.path.exists(mountpoint)
                           else f"mount point {mountpoint} does not exist; create it first (mkdir)")
    if state == "live":
        raise CommandError(f"{mountpoint} is already mounted; `sls umount {mountpoint}` first")
    if state == "stale":         # its daemon died: this store's is replaced, as after a crash
        other = _store_mounted_at(mountpoint)
        if not args.force and other != os.path.realpath(store):
            raise CommandError(f"{mountpoint} is a stale mount of another store ({other}) left by a mount daemon "
                               f"that died; run `sls mount --force ...` (or `sls umount {mountpoint}`) to replace it")
        _detach(mountpoint)
    if (live := _live_mount_of(store)) is not None:
        return _bind_to_live_mount(store, live, mountpoint, args)
    interval = DEFAULT_INTERVAL_MS if args.checkpoint_interval is None else args.checkpoint_interval
    daemon_args = [store, mountpoint, "--volume", args.volume, "--checkpoint-interval", str(interval)]
    if args.allow_other:
        daemon_args.append("--allow-other")
    for option in getattr(args, "mount_options", ()):
        daemon_args += ["--mount-option", option]
    if args.foreground:
        from .mount_daemon import main as daemon_main
        return daemon_main(daemon_args + ["--log-to-stderr"])
    return _start_daemon(store, mountpoint, daemon_args, quiet=getattr(args, "quiet", False))


def _store_mounted_at(mountpoint: str) -> str | None:
    """The real path of the store of the slsfs mount at `mountpoint`, if one is there."""
    real = canonical_mountpoint(mountpoint)
    return next((os.path.realpath(m.store) for m in slsfs_mounts() if m.mountpoint == real), None)


def _live_mount_of(store: str) -> MountInfo | None:
    """A mount of `store` whose daemon answers, if there is one."""
    real = os.path.realpath(store)
    return next((m for m in slsfs_mounts()
                 if os.path.realpath(m.store) == real and mount_state(m.mountpoint) == "live"), None)


def _bind_to_live_mount(store: str, live: MountInfo, mountpoint: str, args) -> int:
    """A second mount of a store that a live daemon serves: a bind mount of its mount at
    `mountpoint`, served by the same daemon (one superblock, as a kernel file system mounted
    twice from one device; xfstests generic/732 moves files between the two). `sls umount`
    of either leaves the other. What belongs to the daemon (volume, checkpoint interval,
    allow_other) must be what it already has: a clear refusal otherwise. The per-mount
    flags asked for (ro, nosuid, ...) are the new mount's own."""
    try:
        status = request(live.store, "status")
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    served_by = f"{store} is mounted at {live.mountpoint} (daemon pid {status['pid']})"
    if status["volume"] != args.volume:
        raise CommandError(f"{served_by} with volume {status['volume']!r}, and its daemon serves that one "
                           f"volume: mount volume {status['volume']!r}, or `sls umount {live.mountpoint}` "
                           f"first to mount volume {args.volume!r}")
    interval = status.get("checkpoint_interval_ms")
    if None not in (args.checkpoint_interval, interval) and round(args.checkpoint_interval, 6) != interval:
        every = f"checkpoints every {interval:g} ms" if interval else "takes no periodic checkpoints"
        raise CommandError(f"{served_by}, and its daemon {every}: a second mount shares that daemon; "
                           f"leave out the checkpoint interval, or `sls umount {live.mountpoint}` first")
    if args.allow_other and "allow_other" not in live.super_options:
        raise CommandError(f"{served_by} without --allow-other, and a second mount shares its daemon: "
                           f"`sls umount {live.mountpoint}`, then mount with --allow-other")
    if args.foreground:
        raise CommandError(f"{served_by} already; without --foreground a second mount shares that daemon")
    _run_mount(["--bind", live.mountpoint, mountpoint], f"could not bind {live.mountpoint} to {mountpoint}")
    if flags := [o for o in last_wins(getattr(args, "mount_options", ())) if o in PER_MOUNT_OPTIONS]:
        try:
            _run_mount(["-o", ",".join(["remount", "bind", *flags]), mountpoint],
                       f"could not set {','.join(flags)} on {mountpoint}")
        except CommandError:
            _detach(mountpoint)
            raise
    if not getattr(args, "quiet", False):
        print(f"mounted {store} at {mountpoint}: a second mount of its live mount at {live.mountpoint} "
              f"(daemon pid {status['pid']} serves both; `sls umount` either)")
    return 0


def _run_mount(options: list[str], failure: str) -> None:
    result = subprocess.run(["mount", *options], capture_output=True, text=True)
    if result.returncode != 0:
        raise CommandError(f"{failure}: {result.stderr.strip()}")


def _wait_for_unmounted_daemon(store: str) -> None:
    """A mount right after umount(8), which returns once the kernel has let the mount go:
    the store's mount daemon may still be writing its final checkpoint, holding the store.
    Wait for it to exit (at most UMOUNT_TIMEOUT_S, as `sls umount` does) rather than fail
    with "in use"; a daemon whose store is still mounted somewhere is not waited for."""
    holder = dying_daemon.lock_holder(store)
    if holder is None or any(os.path.realpath(m.store) == os.path.realpath(store) for m in slsfs_mounts()):
        return
    try:
        command = Path(f"/proc/{holder}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if MOUNT_DAEMON_MODULE.encode() in command:
        _wait_exit(holder, UMOUNT_TIMEOUT_S)


def _start_daemon(store: str, mountpoint: str, daemon_args: list[str], *, quiet: bool) -> int:
    read_end, write_end = os.pipe()
    log_path = os.path.join(store, LOG_NAME)
    with open(log_path, "ab") as log_file, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([sys.executable, *DAEMON_MODULE_FLAGS, MOUNT_DAEMON_MODULE, *daemon_args,
                                 "--ready-fd", str(write_end)],
                                stdin=devnull, stdout=log_file, stderr=log_file,
                                pass_fds=(write_end,), start_new_session=True)
    os.close(write_end)
    try:
        message = read_line(read_end, MOUNT_TIMEOUT_S)
    finally:
        os.close(read_end)
    if message == "ok":
        if not quiet:
            print(f"mounted {store} at {mountpoint} (daemon pid {proc.pid}, log {log_path})")
        return 0
    if proc.poll() is None and not message:
        proc.terminate()
    reason = message[len("error: "):] if message.startswith("error: ") else (message or "no answer")
    raise CommandError(f"mount failed: {reason} (see {log_path})")


# ----- mount -t fuse.slsfs and /etc/fstab ----------------------------------------------
#: options of `mount -o` that mount(8) or mount.fuse3 may pass and that change nothing here
#: (default_permissions: slsfs always has the kernel check permissions; xfstests' README.fuse
#: and many fstab lines for FUSE file systems name it)
IGNORED_MOUNT_OPTIONS = frozenset({"defaults", "auto", "noauto", "nofail", "_netdev",
                                   "user", "nouser", "users", "owner", "group", "comment",
                                   "default_permissions"})
HELPER_USAGE = ("usage: slsfs STORE MOUNTPOINT [-o volume=NAME,checkpoint_interval=MS,"
                "allow_other,force,<kernel options>]")


def parse_mount_options(text: str) -> argparse.Namespace:
    """The `sls mount` settings that a `mount -o` option string asks for."""
    settings = argparse.Namespace(volume="main", allow_other=False, force=False, foreground=False,
                                  checkpoint_interval=None, mount_options=[],
                                  quiet=True)    # like mount(8): nothing on stdout when it worked
    for option in filter(None, text.split(",")):
        name, has_value, value = option.partition("=")
        if name == "volume" and value:
            settings.volume = value
        elif name == "checkpoint_interval" and has_value:
            try:
                settings.checkpoint_interval = float(value)
            except ValueError:
                raise CommandError(f"checkpoint_interval={value}: not a number of milliseconds") from None
        elif option in ("allow_other", "force"):
            setattr(settings, option, True)
        elif option in KERNEL_MOUNT_OPTIONS | ATIME_MOUNT_OPTIONS:
            settings.mount_options.append(option)
        elif option not in IGNORED_MOUNT_OPTIONS and name not in IGNORED_MOUNT_OPTIONS:
            raise CommandError(f"unknown mount option {option!r}; slsfs takes volume=NAME, "
                               "checkpoint_interval=MS, allow_other, force and "
                               + ", ".join(sorted(KERNEL_MOUNT_OPTIONS | ATIME_MOUNT_OPTIONS)))
    return settings


def mount_helper(argv: list[str] | None = None) -> int:
    """The `slsfs` program: what mount.fuse3 runs for `mount -t fuse.slsfs STORE MNT -o ...`
    and for an fstab line `STORE MNT fuse.slsfs volume=main 0 0`. Mounts in the background
    like `sls mount` and exits once the mount is live."""
    argv = sys.argv[1:] if argv is None else argv
    options, positional = "", []
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            options += "," + next(args, "")
        elif arg.startswith("-o"):
            options += "," + arg[2:]
        elif arg.startswith("-"):
            print(f"slsfs: unknown flag {arg}\n{HELPER_USAGE}", file=sys.stderr)
            return 2
        else:
            positional.append(arg)
    if "remount" in options.split(",") and positional:
        return remount(positional[-1], options)
    if len(positional) != 2:
        print(HELPER_USAGE, file=sys.stderr)
        return 2
    try:
        settings = parse_mount_options(options)
        settings.store, settings.mountpoint = positional
        return cmd_mount(settings)
    except (CommandError, StoreError, OSError) as exc:
        print(f"slsfs: {exc}", file=sys.stderr)
        return 1


def remount(mountpoint: str, options: str) -> int:
    """`mount -o remount,ro MNT` (mount(8) runs the helper for it): the kernel's flags of the
    mount change (ro, rw, nosuid, noexec, ...: FUSE takes them on a remount); what the
    daemon was started with (volume, atime policy, ...) stays. Run by mount(8) told not to
    call this helper again (-i)."""
    flags = [o for o in options.split(",") if o in KERNEL_MOUNT_OPTIONS]
    result = subprocess.run(["mount", "-i", "-o", ",".join(["remount", *flags]), mountpoint],
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"slsfs: remount of {mountpoint} failed: {result.stderr.strip()}", file=sys.stderr)
    return result.returncode


def cmd_umount(args) -> int:
    print(unmount(os.path.abspath(args.mountpoint), force=args.force))
    return 0


def unmount(mountpoint: str, *, force: bool = False, busy_hint: str = "close these first (or --force)") -> str:
    """Unmount a slsfs mount and wait for its daemon's final checkpoint (refusing, with
    the list, while files are open there unless `force`); returns what was done. The mount
    of a group daemon is unmounted by stopping the daemon, refused while its groups run
    unless `force` (which stops them, as `sls stop` does)."""
    real = canonical_mountpoint(mountpoint)
    for mount in slsfs_mounts():
        if mount.mountpoint == real:
            dying_daemon.release(mount.store)
    state = mount_state(mountpoint)
    if state == "free":
        raise CommandError(f"{mountpoint} is not a slsfs mount")
    if state == "stale":
        stopped = orphans.stop_orphans({m.device for m in slsfs_mounts() if m.mountpoint == real and m.device})
        _detach(mountpoint)
        return (f"detached stale mount {mountpoint} (its daemon had died; the store holds "
                "everything up to its last durable checkpoint)"
                + (f"; stopped the processes its groups left running there: {' '.join(map(str, stopped))}"
                   if stopped else ""))
    info, _ = find_mount(mountpoint)
    try:
        pid = request(info.store, "status")["pid"]
    except ControlError:
        pid = None
    # one of several mounts of its daemon (`sls mount` of a mounted store, mount --bind): only it goes
    others = [m.mountpoint for m in slsfs_mounts() if info.device and m.device == info.device
              and m.mountpoint != info.mountpoint]
    groups = None if others else _running_groups(info.store)
    if groups and not force:
        raise CommandError(f"persistence groups run in {mountpoint} ({', '.join(groups)}): `sls stop --store "
                           f"{info.store}` stops them and unmounts it, their last durable checkpoints kept "
                           "(`sls umount --force` does the same)")
    if not force:
        refuse_while_busy(mountpoint, pid, busy_hint)
    if groups is not None and pid is not None:    # a group daemon: it unmounts as it stops
        from .group_commands import stop_daemon       # (group_commands imports this module)
        stop_daemon(info.store, pid)
        return f"unmounted {mountpoint}" + (f" (stopped groups {', '.join(groups)}: their last durable "
                                            "checkpoints stay)" if groups else "")
    cmd = ["fusermount3", "-u"] + (["-z"] if force else []) + [mountpoint]
    deadline = time.monotonic() + UMOUNT_BUSY_RETRY_S
    while (result := subprocess.run(cmd, capture_output=True, text=True)).returncode != 0:
        # busy though no file was open a moment ago: a path lookup passing through pins the
        # mount for a moment (mount.flusher's helper, say); a user's file keeps it busy longer
        if "busy" not in result.stderr or time.monotonic() > deadline:
            busy = open_files(mountpoint, ignore=pid)
            listing = f" (open there: {'; '.join(busy[:20])})" if busy else ""
            raise CommandError(f"could not unmount {mountpoint}: {result.stderr.strip()}{listing}")
        time.sleep(0.05)
    if others:
        return f"unmounted {mountpoint} (its daemon goes on serving {', '.join(others)})"
    if pid is not None:
        _wait_for_final_checkpoint(mountpoint, info, pid, force)
    return f"unmounted {mountpoint}"


def _wait_for_final_checkpoint(mountpoint: str, info: MountInfo, pid: int, force: bool) -> None:
    """Wait for the daemon `pid` of the mount just unmounted to write its final checkpoint
    and exit. Its file system ends only when its last mount goes: a copy of it in another
    mount namespace (slsfs.mount_namespaces) keeps the daemon serving. Say so at once and
    wait for the copies to go (a restore or a short-lived `unshare --mount` ends soon), or
    with `force` stop the daemon, as SIGTERM does."""
    deadline = time.monotonic() + UMOUNT_TIMEOUT_S
    look_at, elsewhere = time.monotonic(), []
    while not _exited(pid):
        now = time.monotonic()
        if now > deadline:
            held = (f": it is still mounted in other mount namespaces: {'; '.join(elsewhere[:20])}; unmount "
                    "it there or end those processes, or `sls umount --force` the same path to stop the daemon "
                    "anyway" if elsewhere else f" (see {info.store}/{LOG_NAME})")
            raise CommandError(f"unmounted {mountpoint}, but daemon pid {pid} still runs after "
                               f"{UMOUNT_TIMEOUT_S:.0f} s{held}")
        if now > look_at and info.device:
            look_at = now + ELSEWHERE_CHECK_S
            if (found := copies_elsewhere(info.device)) and force:
                os.kill(pid, signal.SIGTERM)
                look_at = deadline
            elif found and not elsewhere:
                print(f"sls: {mountpoint} is still mounted in other mount namespaces, where daemon pid {pid} "
                      f"serves it: {'; '.join(found[:20])}; waiting for them to let it go (at most "
                      f"{UMOUNT_TIMEOUT_S:.0f} s; `sls umount --force` the same path stops the daemon anyway)",
                      file=sys.stderr, flush=True)
            elsewhere = found
        time.sleep(0.05)


def _running_groups(store: str) -> list[str] | None:
    """The persistence groups running in the daemon of `store`; None for an `sls mount`
    daemon (it does not know the request). A group daemon holds its mount's root, so it
    is unmounted by stopping it, as `sls stop` does."""
    try:
        return [g["group"] for g in request(store, "ps")["groups"] if g["running"]]
    except ControlError:
        return None


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.05)
    return False


def _exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ----- history, snapshots, clones ------------------------------------------------------
def cmd_checkpoint(args) -> int:
    reply, _ = _control(args.mountpoint, "checkpoint", name=args.name)
    named = f" named {args.name!r}" if args.name else ""
    _print(args, reply, f"checkpoint {reply['checkpoint']}{named}")
    return 0


def _store_or_daemon(target: str, op: str, **fields):
    """(reply from the daemon, None) when `target` is mounted, else (None, Store path)."""
    if (Path(target) / "FORMAT").exists():
        dying_daemon.release(target)    # a daemon killed a moment ago: its socket would accept, then reset
        try:
            return request(target, op, timeout=3600, **fields), None
        except ControlError as exc:
            if _daemon_listens(target):    # it answered with a refusal (or too late): say so
                raise CommandError(str(exc)) from None
            return None, target
    try:
        find_mount(target)
    except ControlError:
        raise CommandError(f"{target} is neither a slsfs store (no FORMAT file) nor inside a slsfs mount: "
                           "name a store directory or a mount point") from None
    return _control(target, op, timeout=3600, **fields)[0], None


def _daemon_listens(store: str) -> bool:
    """Whether a daemon accepts connections on `store`'s control socket (not a stale one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            connect_unix(sock, socket_path(store))
        except OSError:
            return False
    return True


def cmd_log(args) -> int:
    reply, store_path = _store_or_daemon(_target(args), "log")
    if reply is None:
        with Store.open(store_path, readonly=True) as store:
            commits, tags = [c.to_json() for c in store.log()], store.tags()
    else:
        commits, tags = reply["log"], reply["tags"]
    if args.limit:
        commits = commits[:args.limit]
    names: dict[int, list[str]] = {}
    for name, cid in tags.items():
        names.setdefault(cid, []).append(name)
    for c in commits:
        c["tags"] = sorted(names.get(c["id"], []))
    lines = [f"{c['id']:>8}  {datetime.fromtimestamp(c['time']).isoformat(timespec='milliseconds')}"
             f"  {c['label'] or '-'}{'  [' + ', '.join(c['tags']) + ']' if c['tags'] else ''}"
             for c in commits]
    _print(args, {"checkpoints": commits}, "\n".join(lines) or "no checkpoints")
    return 0


def cmd_snapshot(args) -> int:
    reply, _ = _control(args.directory, "snapshot", path=_relpath(args.directory), name=args.name)
    _print(args, reply, f"snapshot {reply['name']} (checkpoint {reply['checkpoint']}): {reply['path']}")
    return 0


def cmd_clone(args) -> int:
    src_info, src_rel = find_mount(args.src)
    parent = os.path.dirname(os.path.abspath(args.dest.rstrip("/")))
    dest_info, dest_parent_rel = find_mount(parent)
    if src_info.store != dest_info.store:
        raise CommandError("a clone must be made in the same mount as its source")
    dest_rel = os.path.join(dest_parent_rel, os.path.basename(args.dest.rstrip("/")))
    try:
        reply = request(src_info.store, "clone", src=src_rel, dest=dest_rel)
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    _print(args, reply, f"cloned {args.src} to {args.dest} (volume {reply['volume']})")
    return 0


def _walk(root: str) -> dict[str, tuple]:
    """path -> (type, size, mtime_ns, link target) for every entry under `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            target = os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            out[os.path.relpath(full, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                                size, st.st_mtime_ns, target)
    return out


def cmd_diff(args) -> int:
    mount = args.mount
    if args.store is None and mount is None and not (os.path.isdir(args.a) and os.path.isdir(args.b)):
        mount = _mount_of_cwd()
        if mount is None:
            missing = args.a if not os.path.isdir(args.a) else args.b
            raise CommandError(f"{missing} is not a directory; to compare checkpoints, name their mount "
                               f"or store (sls diff --mount MNT {args.a} {args.b}) or run it inside the mount")
    if args.store is not None:
        doc, offline = _store_or_daemon(store_path(args.store), "diff", a=args.a, b=args.b)
        doc = doc or _diff_offline(offline, args.a, args.b)
    elif mount is not None:
        try:
            doc = _control(mount, "diff", a=args.a, b=args.b)[0]
        except ControlError as exc:
            raise CommandError(str(exc)) from None
    else:
        left, right = _walk(args.a), _walk(args.b)
        doc = {"added": sorted(set(right) - set(left)), "removed": sorted(set(left) - set(right)),
               "changed": sorted(p for p in set(left) & set(right) if left[p] != right[p])}
    doc = {key: doc[key] for key in ("a", "b", "added", "removed", "changed") if key in doc}
    human = "\n".join([f"+ {p}" for p in doc["added"]] + [f"- {p}" for p in doc["removed"]]
                      + [f"M {p}" for p in doc["changed"]])
    _print(args, doc, human or "no differences")
    return 0


def _diff_offline(store_dir: str, a: str, b: str) -> dict:
    """What a daemon answers to `diff`, read from a store no daemon serves."""
    from mount.treediff import TreeDiff, diff_steps
    from .groups import GroupError, diff_roots
    with Store.open(store_dir, readonly=True) as store:
        try:
            (old_id, old_roots), (new_id, new_roots) = diff_roots(store, a), diff_roots(store, b)
        except GroupError as exc:
            raise CommandError(str(exc)) from None
        result = TreeDiff()
        for _ in diff_steps(store, old_roots, new_roots, _volume_to_diff(store_dir, old_roots, new_roots), result):
            pass
    return {"a": old_id, "b": new_id, **result.to_json()}


def _volume_to_diff(store_dir: str, *roots: dict) -> str:
    """The volume a diff without a mount compares: `main` (sls mount's default), or the
    store's only volume; clones (`<volume>.<leaf>`) are compared within theirs."""
    from objectstore.store import VOLUME_PREFIX
    names = {n[len(VOLUME_PREFIX):] for each in roots for n in each if n.startswith(VOLUME_PREFIX)}
    tops = sorted(n for n in names if not any(n.startswith(other + ".") for other in names if other != n))
    if "main" in tops:
        return "main"
    if len(tops) == 1:
        return tops[0]
    raise CommandError(f"{store_dir} has volumes {', '.join(tops) or 'none'}: compare a volume's checkpoints in "
                       f"its mount (sls mount {store_dir} MNT --volume V, then sls diff --mount MNT A B)")


def _mount_of_cwd() -> str | None:
    """The slsfs mount the current directory is in, if any."""
    try:
        return find_mount(os.getcwd())[0].mountpoint
    except ControlError:
        return None


# ----- maintenance ---------------------------------------------------------------------
def _maintain(args, op: str, prune: Prune | None = None) -> dict:
    fields = {"prune": prune.to_json()} if prune is not None else {}
    try:
        if prune is not None:
            progress.line("pruning history, then collecting")
        reply, store_path = _store_or_daemon(_target(args), op, **fields)
        if reply is not None:
            return reply
        readonly = op != "gc"
        with Store.open(store_path, readonly=readonly) as store:
            if op == "gc":      # kept group records keep the files commits they name
                result = store.gc(progress=progress.line, prune=prune,
                                  also_keep=lambda keep: group_retention.needed(store, keep))
            elif op == "fsck":
                result = {"problems": store.fsck(progress=progress.line)}
            else:
                result = store.stats()
    finally:
        progress.done()
    return result


def cmd_gc(args) -> int:
    prune = _prune_of(args)
    result = _maintain(args, "gc", prune)
    if prune is not None and "names_forgotten" not in result:
        raise CommandError("the mount's daemon is older than `sls gc --keep-last/--keep-within/"
                           "--forget` and did a plain gc: restart the mount, then run it again")
    result.pop("ok", None)
    forgot = "".join(f"; name {n} forgotten" for n in result.get("names_forgotten", []))
    _print(args, result, f"checkpoints: {result['commits_before']} -> {result['commits_after']}{forgot}; "
                         f"freed {human_bytes(result['bytes_freed'])} ({result['packs_compacted']} packs "
                         f"compacted, {result['unreachable_chunks']} unreachable chunks) in {result['seconds']} s")
    return 0


def _prune_of(args) -> Prune | None:
    """The explicit prune `sls gc`'s options ask for (None: the store's policy only)."""
    if args.keep_last is None and args.keep_within is None and not args.forget:
        return None
    try:
        within = parse_duration(args.keep_within) if args.keep_within is not None else None
        return Prune(args.keep_last, within, tuple(args.forget))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def cmd_fsck(args) -> int:
    problems = _maintain(args, "fsck")["problems"]
    _print(args, {"problems": problems, "clean": not problems},
           "\n".join(problems) if problems else "clean: no problems found")
    return 1 if problems else 0


def cmd_retention(args) -> int:
    """Show the store's retention policy, or change the settings given (named checkpoints
    always stay; the newest too)."""
    changes = {field: getattr(args, field) for field in asdict(RetentionPolicy())
               if getattr(args, field) is not None}
    fields = {"set": changes} if changes else {}
    reply, store_path = _store_or_daemon(_target(args), "retention", **fields)
    if reply is None:
        with Store.open(store_path, readonly=not changes) as store:
            try:
                if changes:
                    store.set_retention(changes)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            reply = store.retention_status()
    reply.pop("ok", None)
    policy, applied = reply["policy"], reply["applied"]
    tiers = [f"one a {unit} for {policy[field]} {unit}s" for field, unit in
             (("minutely", "minute"), ("hourly", "hour"), ("daily", "day")) if policy[field]]
    newest = max(policy["keep_last"], 1)              # (the newest stays whatever keep-last says)
    human = (f"keeps the newest {newest} checkpoint{'s' * (newest != 1)}{', then ' if tiers else ''}"
             f"{', '.join(tiers)}; named checkpoints always")
    if applied != policy:
        human += (f"\nthe disk is short of space (level {reply['space_pressure']}): applied now is keep-last "
                  f"{applied['keep_last']}, minutely {applied['minutely']}, hourly {applied['hourly']}, "
                  f"daily {applied['daily']}")
    _print(args, reply, human)
    return 0


def cmd_stat(args) -> int:
    result = _maintain(args, "stats")
    result.pop("ok", None)
    checkpoints, volumes = result.get("checkpoints", 0), result.get("volumes", 0)
    human = (f"space on disk: {human_bytes(result.get('disk_bytes', 0))}; "
             f"data: {human_bytes(result.get('logical_bytes', 0))} logical, "
             f"{human_bytes(result.get('stored_data_bytes', 0))} stored; "
             f"dedup x{result.get('dedup_ratio')}, compression x{result.get('compression_ratio')}; "
             f"{checkpoints} checkpoint{'s' * (checkpoints != 1)}, {volumes} volume{'s' * (volumes != 1)}")
    if result.get("space_pressure"):
        human += (f"; the disk is short of space: unnamed history is thinned harder (level "
                  f"{result['space_pressure']}: objectstore.retention.squeezed)")
    if result.get("pending_compression_bytes"):
        human += (f"; {human_bytes(result['pending_compression_bytes'])} of checkpointed pages not "
                  "compressed yet (gc compresses those it keeps)")
    _print(args, result, human)
    return 0


def human_bytes(n: float) -> str:
    """A byte count as people read it: 512 B, 3.2 KiB, 41.0 MiB, 1.5 GiB."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"
