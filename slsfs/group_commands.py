"""The persistence-group verbs of `sls`: run, ps, barrier, stop, and the group forms of
`checkpoint` and `restore`.

They talk to the store's slsfs daemon (slsfs.daemon) over its control socket, starting
it when needed. `sls checkpoint` belongs to the file-system verbs (a mount point);
with `--store STORE` its argument is a group instead: this module adds that option to
the existing parser and dispatches; `restore` is built here first (slsfs.cli.VERBS).
objectstore and slsfs.groups (which imports it) are imported by the verbs that read the
store: `sls restore` after a crash leaves the store to its daemon, whose fork imports
them at its raised share (see slsfs.cli's imports).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import shlex
import time

from mount.control import ControlError, mount_state, request, slsfs_mounts

from . import dying_daemon
from .cli import CommandError, add_json_flag, read_only_store, skip_teardown_at_exit, store_path
from .daemon_ready import LOG_NAME
from .daemon_start import DAEMON_STOP_TIMEOUT_S, take
from .group_names import bad_name_reason
from .proc_commands import refuse_uncheckpointable
from .take_over import HandOver, take_over_plain_mount

AT_HELP = ("which checkpoint: GROUP#N or '#N' (group checkpoint number N, as `sls log` labels it), a checkpoint id "
           "(a group checkpoint's own, or its files commit's), a name given by `sls checkpoint --name`, "
           "'latest', 'latest~N' or an ISO-8601 time (the newest at or before it); default: the newest "
           "durable")


def build(verb: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of `verb` (one of ours, or one we extend: slsfs.cli.VERBS) to its parser."""
    {"run": _run_args, "persist": _persist_args, "ps": _ps_args, "barrier": _barrier_args, "stop": _stop_args,
     "checkpoint": _extend_checkpoint, "restore": _restore_args, "send": _extend_send}[verb](p)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True)
    p.add_argument("--volume", help="the volume to mount (default: the one `sls mount` serves, or main)")
    p.add_argument("--name", help="group name (default: the command's name)")
    p.add_argument("--hz", type=float, default=10.0,
                   help="checkpoints per second (default 10; 0: only on `sls checkpoint`)")
    p.add_argument("--mountpoint", help="where the daemon mounts the volume (default: STORE.mnt)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cwd", dest="mode", action="store_const", const="cwd",
                      help="the mount is the working directory (default); TMPDIR, unless set (or the "
                           "mount point's path is long), is its .sls-tmp: temporary files are checkpointed too")
    mode.add_argument("--root", dest="mode", action="store_const", const="root",
                      help="the mount is the root directory (chroot), with the host's /usr, /etc, "
                           "... read-only, its own /proc and a small /dev (slsfs.rootfs)")
    p.add_argument("--init", action="store_true",
                   help="run CMD under a small init (PID 1 of the group, like docker --init): the group "
                        "lasts until its last process ends, so programs that daemonize keep running")
    p.add_argument("--resume", action="store_true",
                   help="if the group has a checkpoint, restore it instead of starting CMD "
                        "(for supervisors: the same line starts or resumes)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    add_json_flag(p)
    p.set_defaults(func=cmd_run, mode="cwd")


def _persist_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pid", type=int)
    p.add_argument("--store", required=True,
                   help="the store (its daemon adopts the process; with none running, one is started)")
    p.add_argument("--name", help="group name (default: pid-PID)")
    p.add_argument("--hz", type=float, default=10.0, help="checkpoints per second (default 10)")
    p.add_argument("--volume", default="main",
                   help="the volume a daemon started for it mounts (default main; `sls mount`'s keeps its own)")
    p.add_argument("--mountpoint", help="where a daemon started for it mounts the volume (default: STORE.mnt); "
                                        "the process's files are checkpointed only if they live there")
    add_json_flag(p)
    p.set_defaults(func=cmd_persist)


def _ps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True)
    add_json_flag(p)
    p.set_defaults(func=cmd_ps)


def _barrier_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("group")
    p.add_argument("--store", required=True)
    add_json_flag(p)
    p.set_defaults(func=cmd_barrier)


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", nargs="?", help="only this group (e.g. a clone); default: all, and the daemon")
    p.add_argument("--store", required=True)
    p.set_defaults(func=cmd_stop)


def _extend_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="the argument is a persistence group of this store")
    add_json_flag(p)
    fs_func = p.get_default("func")

    def dispatch(args) -> int:
        return cmd_group_checkpoint(args) if args.store else fs_func(args)
    p.set_defaults(func=dispatch)


def _restore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("group")
    p.add_argument("--store", help="the argument is a persistence group of this store")
    p.add_argument("--at", metavar="CHECKPOINT", help=AT_HELP)
    p.add_argument("--clone", action="store_true",
                   help="start independent copies on O(1) clones of the checkpoint's files instead "
                        "(copies of a server share its listening ports)")
    p.add_argument("--count", type=int, default=1, help="with --clone: how many copies (default 1)")
    p.add_argument("--mountpoint", help="mount here instead of where the group ran (for a group received with "
                                             "`sls recv`: instead of STORE.mnt)")
    p.add_argument("--force", action="store_true",
                   help="also when other groups run in the store (they are stopped: the volume's files "
                        "go back to the checkpoint)")
    add_json_flag(p)

    def dispatch(args) -> int:
        if not args.store:
            raise CommandError("say which store holds the group: sls restore GROUP --store STORE")
        return cmd_group_restore(args)
    p.set_defaults(func=dispatch)


def _extend_send(p: argparse.ArgumentParser) -> None:
    """`sls send GROUP --store S`: send the newest durable checkpoint naming the group."""
    send_func = p.get_default("func")

    def dispatch(args) -> int:
        from objectstore import Store
        from . import groups
        with Store.open(args.store, readonly=True) as store:
            head = store.head
            is_group = (head is not None and args.checkpoint not in store.tags()
                        and groups.ROOT_PREFIX + args.checkpoint in head.roots)
        if is_group:
            args.checkpoint = str(head.id)
        return send_func(args)
    p.set_defaults(func=dispatch)


def _print(args, doc: dict, human: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if args.json else human)


class PlainMountServes(CommandError):
    """`sls mount`'s daemon serves the store: it runs no persistence groups."""


def _plain_mount_message(store: str) -> str:
    return (f"{store} is mounted by `sls mount`, which runs no persistence groups "
            "(`sls run` and `sls restore` take that mount over)")


def ask(store: str, op: str, timeout: float = 120.0, **fields) -> dict:
    try:
        return request(store, op, timeout=timeout, **fields)
    except ControlError as exc:
        if "unknown request" in str(exc):
            raise CommandError(_plain_mount_message(store)) from None
        raise CommandError(str(exc)) from None


def daemon_status(store: str, release: bool = True, **fields) -> dict | None:
    """The daemon's `ps` reply (asked with `fields`), or None when no daemon serves the
    store (one that was killed but could not finish dying is let go first:
    slsfs.dying_daemon; not when `release` is False: take_over_plain_mount did, a moment
    ago). PlainMountServes when `sls mount`'s daemon serves it."""
    if release:
        dying_daemon.release(store)
    try:
        return request(store, "ps", timeout=30, **fields)
    except ControlError as exc:
        if "no mount daemon is running" in str(exc):
            return None
        if "unknown request" in str(exc):
            raise PlainMountServes(_plain_mount_message(store)) from None
        raise CommandError(str(exc)) from None


def stop_daemon(store: str, pid: int) -> None:
    """Ask the daemon `pid` of `store` to stop and wait until it has exited (woken by its
    exit through a pidfd, taken before the request: no polling, no PID reused meanwhile)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None
    try:
        ask(store, "shutdown")
        if pidfd is not None and not select.select([pidfd], [], [], DAEMON_STOP_TIMEOUT_S)[0]:
            raise CommandError(f"daemon {pid} of {store} did not stop in {DAEMON_STOP_TIMEOUT_S:.0f} s "
                               f"(see {store}/{LOG_NAME})")
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _stop_if_idle(store: str) -> None:
    """Stop the daemon this command started for a group that failed to start, unless a
    group runs in it meanwhile: a failed `sls run` leaves no daemon or mount behind. (If
    that fails too, the command's own error is the one to tell.)"""
    try:
        status = daemon_status(store)
        if status is not None and not any(g["running"] for g in status["groups"]):
            stop_daemon(store, status["daemon"])
    except CommandError:
        pass


# ----- verbs ---------------------------------------------------------------------------
def cmd_run(args) -> int:
    store = store_path(args.store)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise CommandError("give the command to run after --, e.g. sls run --store S -- python3 app.py")
    _check_rate(args.hz)
    name = args.name or re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(cmd[0]))[:64]
    if (why := bad_name_reason(name)) is not None:      # before a daemon starts for it
        raise CommandError(why if args.name else f"{why} (made from the command's name: give one with --name)")
    if args.mountpoint:
        _refuse_another_stores_mount(store, args.mountpoint)
    plain_mountpoint, plain_volume, starter = take_over_plain_mount(store) or (None, None, None)
    status = None if plain_mountpoint else daemon_status(store, release=False)
    chosen = args.mountpoint or plain_mountpoint          # (else the group's own, or STORE.mnt)
    volume = args.volume or plain_volume or "main"
    if args.resume and status is not None and _has_checkpoint(store, name):
        if any(g["group"] == name and g["running"] for g in status["groups"]):
            raise CommandError(f"group {name} is already running (pids "
                               f"{' '.join(str(p) for g in status['groups'] if g['group'] == name for p in g['pids'])})")
        if chosen:
            _refuse_another_stores_mount(store, chosen)
        group = (_restore_in_place(store, name, None, chosen, force=False)
                 or _start_restoring(store, name, None, chosen, None))     # (its daemon stopped meanwhile)
        _print(args, group, _restored_line(group))
        return 0
    started_daemon = status is None and starter is None     # (not a plain mount's daemon taken over)
    if status is None:           # --resume: the daemon restores the group if the store has it (opened once)
        mountpoint = os.path.abspath(chosen or store + ".mnt")
        where = (["--restore", name, "--or-new-at", mountpoint, *(["--mountpoint", mountpoint] if chosen else [])]
                 if args.resume else ["--mountpoint", mountpoint])
        status = ((starter or take()).start(store, *where, "--volume", volume) or daemon_status(store)
                  or {"mountpoint": mountpoint})
        if "restored" in status:
            group = _restored_group(store, status, name)
            _print(args, group, _restored_line(group))
            return 0
    settings = {"name": name, "volume": volume, "mountpoint": status["mountpoint"], "hz": args.hz,
                "argv": cmd, "mode": args.mode, "output": os.path.join(store, f"group-{name}.out"),
                "init": args.init}
    try:
        reply = ask(store, "run", settings=settings, env=dict(os.environ))
    except CommandError:
        if started_daemon:
            _stop_if_idle(store)
        raise
    _print(args, reply, f"group {reply['group']}: pid {' '.join(map(str, reply['pids']))} running in "
                        f"{reply['mountpoint']}, {_rate(args.hz)} (first checkpoint "
                        f"{reply['checkpoint']}); output in {reply['output']}")
    return 0


def _has_checkpoint(store: str, name: str) -> bool:
    """Whether the store holds a checkpoint of group `name`, asking its daemon."""
    try:
        ask(store, "resolve_group", group=name, at=None)
    except CommandError as exc:
        if "no persistence group" in str(exc):
            return False
        raise
    return True


PERSIST_BUSY_HINT = ("and a process is taken into a group by a slsfs daemon, which must take this `sls mount` "
                     "over, and cannot while files are open there (a program working in the mount is "
                     "checkpointed with its files when started in a group: `sls run --store STORE -- CMD`)")


def cmd_persist(args) -> int:
    """Adopt process `args.pid` (and its descendants) as a new group of the store's daemon;
    with no daemon, one is started for it (its mount at --mountpoint, default STORE.mnt),
    as `sls run` starts one, and `sls mount`'s daemon is taken over the same way (refused,
    with the list, while files are open in its mount: the process's own among them)."""
    store = store_path(args.store)
    name = args.name or f"pid-{args.pid}"
    if (why := bad_name_reason(name)) is not None:      # before a daemon starts for it
        raise CommandError(why)
    _check_rate(args.hz)
    refuse_uncheckpointable(args.pid)
    hint = PERSIST_BUSY_HINT.replace("STORE", shlex.quote(store))
    plain_mountpoint, plain_volume, starter = take_over_plain_mount(store, busy_hint=hint) or (None, None, None)
    if plain_mountpoint is not None or daemon_status(store, release=False) is None:
        mountpoint = os.path.abspath(plain_mountpoint or args.mountpoint or store + ".mnt")
        (starter or take()).start(store, "--mountpoint", mountpoint, "--volume", plain_volume or args.volume)
    reply = ask(store, "persist", pid=args.pid, name=name, hz=args.hz)
    _print(args, reply, f"group {reply['group']}: pid {args.pid} is {_rate(args.hz)} "
                        f"(first checkpoint {reply['checkpoint']})")
    return 0


def _check_rate(hz: float) -> None:
    if not 0 <= hz <= 1000:
        raise CommandError(f"--hz {hz}: give a rate from 0 to 1000 checkpoints per second")


def _rate(hz: float) -> str:
    return f"checkpointed {hz:g}x a second" if hz > 0 else "checkpointed only when asked (--hz 0)"


def cmd_ps(args) -> int:
    store = store_path(args.store)
    try:
        status = daemon_status(store, stored=True)
    except PlainMountServes:                    # the groups are in the store
        mount_daemon = ask(store, "status")["pid"]
        status = {"daemon": None, "mount_daemon": mount_daemon}
        lines = [f"mounted by `sls mount` (daemon {mount_daemon}), which runs no groups: "
                 f"`sls restore GROUP` takes its mount over"]
    else:
        lines = [f"daemon {status['daemon']}  mount {status.get('mountpoint')}  durable checkpoint "
                 f"{status.get('durable')}" if status else "no daemon runs for this store"]
        status = status or {"daemon": None}
    if not status["daemon"]:
        from . import groups
        status.update(groups=[], stored_groups=groups.stored(read_only_store(store)))
    if status.get("stored_groups"):
        lines.append(f"{'GROUP':<16}{'STATE':<9}{'CHECKPOINT':>11}  {'TAKEN':<21}COMMAND")
    for g in status.get("stored_groups", []):
        taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g["time"])) if g.get("time") else "-"
        ended = g.get("ended") or {}
        state = "stopped" if g.get("stopped") or ended.get("how") == "daemon stopped" else \
            "exited" if ended else "down"
        lines.append(f"{g['group']:<16}{state:<9}{g.get('checkpoint') or '-':>11}  {taken:<21}"
                     + (shlex.join(g["argv"]) if "argv" in g else f"unreadable: {g['error']}"))
        if ended.get("how") == "exited" and ended.get("status") is not None:
            lines.append(f"  {_exit_line(ended['status'], ended.get('why', ''))}")
    if status.get("stored_groups"):
        lines.append(f"(bring one back: sls restore GROUP --store {args.store})")
    lines += [f"{'GROUP':<16}{'STATE':<9}{'PIDS':<16}{'RATE/s':>8}{'CKPTS':>8}{'DURABLE':>9}"
              f"{'STOP ms (med/p99)':>20}  COMMAND"] if status["groups"] else []
    for g in status["groups"]:
        stop = f"{g['stop_ms_median']}/{g['stop_ms_p99']}" if g["stop_ms_median"] is not None else "-"
        durable = "-" if g["last_durable"] is None else g["last_durable"]
        taken = g["checkpoints"]
        others = len(set(g.get("processes", ())) - set(g["pids"]))      # (a daemon older than the field: none)
        pids = " ".join(map(str, g["pids"])) + (f" +{others}" if others else "")
        lines.append(f"{g['group']:<16}{'running' if g['running'] else 'exited':<9}"
                     f"{pids:<16}{g['rate_hz']:>8}{taken:>8}"
                     f"{durable:>9}{stop:>20}  {shlex.join(g['argv'])}")
        if g.get("error"):
            lines.append(f"  ! its checkpoints fail (retried; checkpoint {durable} stays its newest): {g['error']}")
        elif slow := _falls_behind(g):
            lines.append(slow)
        if (ended := g.get("exit_status")) is not None:
            daemonized = ended == 0 and (g.get("ran_s") is None or g["ran_s"] < DAEMONIZED_WITHIN_S)
            lines.append(f"  {_exit_line(ended, g.get('ended_because', ''))}" + (DAEMONIZED if daemonized else ""))
    _print(args, status, "\n".join(lines))
    return 0


def _exit_line(status: int, why: str = "") -> str:
    return (f"killed by signal {-status}" if status < 0 else f"exited with status {status}") + (f": {why}" if why else "")


def _falls_behind(group: dict) -> str:
    """A line saying why a running group is checkpointed well below its rate when it is
    because each checkpoint takes longer than its period to become durable (a program
    writing many pages between checkpoints: each costs the daemon ~15-30 us); else ""."""
    hz, rate, durable_ms = group["hz"], group["rate_hz"], group.get("durable_ms_median")
    if not group["running"] or not hz or durable_ms is None or rate >= 0.8 * hz or durable_ms < 800 / hz:
        return ""
    return (f"  ! checkpointed {rate:g}x a second, not {hz:g}: each checkpoint takes ~{durable_ms:.0f} ms to "
            f"become durable (the last stored {group['pages_last']:,} pages written since the one before)")


DAEMONIZED = ("; if it forked into the background and returned, that took its group with it (the"
              " group ends with its first process): start it with `sls run --init`, or run it in the"
              " foreground (e.g. redis-server --daemonize no, nginx -g 'daemon off;')")
DAEMONIZED_WITHIN_S = 5.0     # a group whose command exited 0 sooner is told DAEMONIZED (a daemon's
# start returns within it; a program that did its work and finished later is not told it daemonized)


def cmd_barrier(args) -> int:
    reply = ask(store_path(args.store), "barrier", group=args.group)
    _print(args, reply, f"group {reply['group']}: checkpoint {reply['checkpoint']} is durable")
    return 0


def cmd_group_checkpoint(args) -> int:
    reply = ask(store_path(args.store), "group_checkpoint", group=args.mountpoint, name=args.name, interim=True)
    named = f" named {args.name!r}" if args.name else ""
    if reply.get("restored"):       # run inside the group, restored from that checkpoint (or a later one)
        _print(args, reply, f"group {reply['group']}: checkpoint #{reply['number']}{named} (durable; this "
                            "process was restored since)")
    else:
        _print(args, reply, f"group {reply['group']}: checkpoint {reply['checkpoint']}{named} (durable)")
    return 0


def cmd_group_restore(args) -> int:
    skip_teardown_at_exit()
    store = store_path(args.store)
    if args.clone:
        return cmd_group_clone(args)
    if args.mountpoint:
        _refuse_another_stores_mount(store, args.mountpoint)
    dying_daemon.release(store)
    group = _restore_in_place(store, args.group, args.at, args.mountpoint, force=args.force)
    if group is None:                # no group daemon: `sls mount`'s, or none
        plain = take_over_plain_mount(store, check=lambda: _check_restorable(store, args.group, args.at))
        if plain is None and (status := daemon_status(store, release=False)) is not None:
            raise CommandError(f"the slsfs daemon {status['daemon']} of {store} is older than this sls (it does "
                               f"not restore in place): stop it (sls stop --store {store}), then restore again")
        group = _start_restoring(store, args.group, args.at, args.mountpoint or (plain and plain[0]),
                                 plain and plain[2])
    _print(args, group, _restored_line(group))
    return 0


def _check_restorable(store: str, name: str, at: str | None) -> None:
    """Refuse here, as the daemon would, a group or checkpoint the store does not hold:
    for a command about to unmount `sls mount`'s mount, which a refusal must leave serving
    (the store opened read-only in the command: the mount daemon holds it)."""
    from . import groups
    try:
        groups.resolve_named(read_only_store(store), name, at)
    except groups.GroupError as exc:
        raise CommandError(str(exc)) from None


def _restore_in_place(store: str, name: str, at: str | None, mountpoint: str | None, *,
                      force: bool) -> dict | None:
    """Restore group `name` (or the group checkpointed at `name`: groups.resolve_named)
    from its checkpoint `at` (default: its newest durable) by the store's running group
    daemon, in one request: it refuses a name it does not find, and other groups running
    unless `force` (the restore puts the volume's files back: they would be stopped too),
    before anything is stopped; it restores in place if the checkpoint is of the volume
    and mount point (`mountpoint`, if given) it serves (Daemon.restore_in_place: no new
    daemon's start), else it is stopped here and a new one started, restoring. The
    group's `ps` entry, with its partners (see _restored_group); None if no group daemon
    answers (none runs, or `sls mount`'s)."""
    try:                               # (a daemon to be was forked only if none answered: kept)
        reply = request(store, "restore", group=name, at=at, force=force,
                        mountpoint=os.path.abspath(mountpoint) if mountpoint else None)
    except ControlError as exc:
        if any(s in str(exc) for s in ("no mount daemon is running", "unknown request")):
            return None
        raise CommandError(str(exc)) from None
    if reply.get("already_running"):
        return {**_restored_group(store, reply, name), "already_running": True, "partners": []}
    if reply["in_place"]:
        return _restored_group(store, reply, name)
    stop_daemon(store, reply["daemon"])
    return _start_restoring(store, name, at, mountpoint, None)


def _start_restoring(store: str, name: str, at: str | None, mountpoint: str | None,
                     starter: HandOver | None) -> dict:
    """Start the store's daemon (`starter`, or a new process), restoring group `name` (the
    daemon started refuses a group or checkpoint it does not find before it mounts
    anything); the group's `ps` entry, with its partners."""
    status = ((starter or take()).start(store, "--restore", name, *(["--at", at] if at else []),
                                        *(["--mountpoint", os.path.abspath(mountpoint)] if mountpoint else []))
              or daemon_status(store) or {"groups": []})
    return _restored_group(store, status, name)


def _refuse_another_stores_mount(store: str, mountpoint: str) -> None:
    """Refuse a mount point where another store is mounted, or that is a file, before
    anything is done: the daemon refuses it too, but only after its restore reset the
    volume, and a running daemon (with its groups) would have been stopped already (a file:
    the daemon failed to start, "[Errno 17] File exists")."""
    if os.path.exists(mountpoint) and not os.path.isdir(mountpoint):
        raise CommandError(f"mount point {mountpoint} exists and is not a directory: give a directory "
                           "(--mountpoint DIR; one that does not exist yet is made)")
    target = os.path.realpath(mountpoint)
    other = next((m.store for m in slsfs_mounts() if m.mountpoint == target
                  and os.path.realpath(m.store) != os.path.realpath(store)), None)
    if other is not None:
        raise CommandError(f"{mountpoint} is a mount of another store ({other}); unmount it, or give "
                           "another mount point (--mountpoint DIR)")


def _restored_group(store: str, status: dict, name: str) -> dict:
    """The `ps` entry of the group that a daemon started with `--restore name` restored
    (its ready line's "restored": what it found `name` names), with `partners`: those of
    the groups checkpointed with it (sharing the volume), which came back with it."""
    name = status.get("restored", name)
    group = next((g for g in status["groups"] if g["group"] == name), None)
    if group is None:
        raise CommandError(f"the daemon started but group {name} is not running (see {store}/{LOG_NAME})")
    return {**group, "partners": [g for g in status["groups"] if g["group"] != name]}


def _restored_line(group: dict) -> str:
    if group.get("already_running"):
        origin = f", restored from checkpoint {group['restored_from']}" if group.get("restored_from") else ""
        return (f"group {group['group']}: already running (pid {' '.join(map(str, group['pids']))} in "
                f"{group['mountpoint']}{origin}): nothing done; to roll it back give the checkpoint "
                "(--at CHECKPOINT; --at latest: its newest)")
    return "\n".join(f"group {g['group']}: restored from checkpoint {g['restored_from']}, "
                     f"pid {' '.join(map(str, g['pids']))} running in {g['mountpoint']}"
                     for g in (group, *group.get("partners", ())))


def cmd_group_clone(args) -> int:
    store = store_path(args.store)
    if not 1 <= args.count <= 1000:
        raise CommandError(f"--count {args.count}: give 1 to 1000 copies")
    if args.mountpoint:
        _refuse_another_stores_mount(store, args.mountpoint)
    plain = take_over_plain_mount(store, check=lambda: _check_restorable(store, args.group, args.at))
    status = None if plain else daemon_status(store)
    if status is None:
        mountpoint = args.mountpoint or (plain and plain[0])      # (as cmd_group_restore's)
        ((plain and plain[2]) or take()).start(store, "--like", args.group,
                                               *(["--mountpoint", os.path.abspath(mountpoint)] if mountpoint else []))
    elif args.mountpoint and os.path.abspath(args.mountpoint) != status["mountpoint"]:
        raise CommandError(f"the daemon of {store} serves it at {status['mountpoint']}, where the clones start: "
                           f"leave out --mountpoint, or stop the daemon first (sls stop --store {store})")
    reply = ask(store, "clone_group", timeout=600, group=args.group, at=args.at, count=args.count)
    lines = [f"{c['group']}: pid {' '.join(map(str, c['pids']))} in {c['directory']} (first checkpoint "
             f"{c['checkpoint']})" for c in reply["clones"]]
    _print(args, reply, "\n".join(lines))
    return 0


def cmd_stop(args) -> int:
    from .fs_commands import unmount
    store = store_path(args.store)
    status = daemon_status(store)
    if status is None:
        if args.group:
            raise CommandError(f"group {args.group} is not running (no daemon runs for {store})")
        stale = [m.mountpoint for m in slsfs_mounts()         # left by a daemon that was killed
                 if os.path.realpath(m.store) == os.path.realpath(store) and mount_state(m.mountpoint) == "stale"]
        print("\n".join(unmount(mountpoint) for mountpoint in stale) if stale else "no daemon runs for this store")
        return 0
    if args.group:
        ask(store, "stop_group", group=args.group)
        print(f"stopped group {args.group} (its last durable checkpoint stays)")
        return 0
    stop_daemon(store, status["daemon"])
    print(f"stopped daemon {status['daemon']} and its groups (their last durable checkpoints stay)")
    return 0
