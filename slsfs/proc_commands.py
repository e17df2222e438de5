"""The process verbs of `sls`: checkpoint a running process tree into a store, restore
it, and list the images (checkpointer/).

    sls checkpoint PID --store STORE [--name N] [--leave-stopped | --kill [--hold SECONDS]] [--json]
    sls restore NAME --store STORE [--detach] [--no-pidns] [--lazy | --eager] [--json]
    sls ps --store STORE [--json]          (persistence groups, then process images)

`checkpoint` and `restore` are shared with the file-system and group verbs: this module
builds after them (slsfs.cli.VERBS) and wraps their dispatchers. `checkpoint` is ours
when its argument is a number (a PID) and --store is given; `restore` is ours when the store
holds a process image of that name and no persistence group of that name: the group
verbs try first and refuse such a name having changed nothing (a daemon they start
resolves it in the store it opens anyway), so that a group's restore after a crash does
not open the store in the command too.
Simplifications: the whole tree under PID is captured; file contents are not part of
an image (only a slsfs mount checkpoints them), which the output says.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time

from .cli import CommandError, close_read_only_store, read_only_store, store_path

GROUP_PREFIX = "grp/"


def build(verb: str, p: argparse.ArgumentParser) -> None:
    """Extend `verb` (checkpoint, restore or ps: slsfs.cli.VERBS builds them before us) with
    what process images need."""
    {"checkpoint": _extend_checkpoint, "restore": _extend_restore, "ps": _extend_ps}[verb](p)


def _positional(p: argparse.ArgumentParser) -> str:
    return next(a.dest for a in p._actions if not a.option_strings)


def _extend_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--leave-stopped", action="store_true",
                   help="with a PID: leave the processes stopped (SIGSTOP) after the checkpoint")
    p.add_argument("--kill", action="store_true",
                   help="with a PID: kill the processes once the image is durable; their TCP connections to "
                        "peers outside it are kept in it and end silently, so a restore resumes them")
    p.add_argument("--hold", type=float, metavar="SECONDS",
                   help="with --kill: how long those connections wait for the restore (default: an hour); then "
                        "their peers are told that the connection is gone (a reset)")
    other, target = p.get_default("func"), _positional(p)

    def dispatch(args) -> int:
        value = str(getattr(args, target))
        if args.leave_stopped and args.kill:
            raise CommandError("--leave-stopped and --kill exclude each other: choose one")
        if args.hold is not None and (not args.kill or args.hold <= 0):
            raise CommandError("--hold SECONDS (more than 0) applies to --kill: how long the killed processes' "
                               "TCP connections wait for the restore")
        if args.store and value.isdigit():
            return cmd_checkpoint(args, int(value))
        for flag in ("leave_stopped", "kill"):
            if getattr(args, flag):
                raise CommandError(f"--{flag.replace('_', '-')} applies to a PID: sls checkpoint PID --store STORE")
        if not args.store and not value.isdigit() and not os.path.exists(value):
            raise CommandError(f"{value} is not a path: for the persistence group {value}, name its store "
                               f"(sls checkpoint {value} --store STORE)")
        return other(args)
    p.set_defaults(func=dispatch)


def _extend_restore(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detach", action="store_true",
                   help="a process image: return once the processes run (default: wait until they "
                        "exit; a group's restore always returns once it runs, its daemon keeps it)")
    p.add_argument("--no-pidns", action="store_true",
                   help="a process image: restore in this PID namespace (the original PIDs must be free)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--lazy", action="store_const", const=True, dest="lazy",
                     help="a process image: run at once; memory comes in on first touch and in the "
                          "background (a page server exits once all is in). Default: lazy for an image "
                          "of many pages (8 MiB or more), eager for a smaller one; the output says which")
    how.add_argument("--eager", action="store_const", const=False, dest="lazy",
                     help="a process image: write all its memory before it runs")
    other, name = p.get_default("func"), _positional(p)

    def dispatch(args) -> int:
        value = getattr(args, name)
        try:
            return other(args)     # refuses, having changed nothing, a name that is no group's
        except CommandError as exc:
            if not (args.store and str(exc).startswith("no persistence group")):
                raise
            if _is_image(args.store, value):
                return cmd_restore(args, value)
            names = ", ".join(_image_names(args.store)) or "none"
            raise CommandError(f"{exc}; nor a process image of that name (images: {names}; "
                               f"`sls ps --store {args.store}` lists both)") from None
    p.set_defaults(func=dispatch)


def _extend_ps(p: argparse.ArgumentParser) -> None:
    other = p.get_default("func")

    def dispatch(args) -> int:
        return cmd_ps(args, other)
    p.set_defaults(func=dispatch)


def _image_names(store: str) -> list[str]:
    return sorted(root[len("img/"):] for root in read_only_store(store_path(store)).roots()
                  if root.startswith("img/"))


def _is_image(store: str, name: str) -> bool:
    roots = read_only_store(store_path(store)).roots()
    return f"img/{name}" in roots and f"{GROUP_PREFIX}{name}" not in roots


@contextlib.contextmanager
def _command_errors():
    """Checkpointer errors as one-line command errors. (The checkpointer is imported by
    the verbs that use it, so that every other `sls` command starts quickly.)"""
    from checkpointer import CheckpointError
    try:
        yield
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None


def _emit(args, doc: dict, human: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if args.json else human)


PF_KTHREAD = 0x00200000   # /proc/PID/stat's flags: a kernel thread


def refuse_uncheckpointable(pid: int) -> None:
    """Refuse at once, saying why, a PID that no checkpoint could take: none such, a kernel
    thread, or this command or one of its ancestors (the freeze of a tree takes its
    descendants: this command would freeze itself, and a shell it froze could never run on)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise CommandError(f"no process {pid}: check the PID (`ps -p {pid}`)") from None
    comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    if int(fields[6]) & PF_KTHREAD:
        raise CommandError(f"process {pid} ({comm}) is a kernel thread: only user-space processes "
                           "can be checkpointed")
    ancestor = os.getpid()
    while ancestor != pid:
        if ancestor <= 1:
            return
        with open(f"/proc/{ancestor}/stat") as f:
            ancestor = int(f.read().rsplit(")", 1)[1].split()[1])
    raise CommandError(f"process {pid} ({comm}) is this command or one of its ancestors (a shell "
                       "running it?): its checkpoint would freeze this command too; run sls from "
                       "outside that process tree")


def cmd_checkpoint(args, pid: int) -> int:
    path = store_path(args.store)
    refuse_uncheckpointable(pid)
    name = args.name or f"pid{pid}-{time.strftime('%Y%m%dT%H%M%S')}"
    import checkpointer
    from objectstore import Store
    with Store.open(path) as store:
        with _command_errors():
            started = time.perf_counter()
            commit = checkpointer.checkpoint([pid], store, name, tree=True, leave_stopped=args.leave_stopped,
                                             kill=args.kill, hold_s=args.hold)
            elapsed = (time.perf_counter() - started) * 1000
        image = checkpointer.load_image(store, name)
        doc = _image_doc(name, image)
    doc.update(checkpoint=commit.id, ms=round(elapsed, 1))
    files = [f for f in image.files if f["kind"] in ("file", "dir")]
    human = (f"checkpoint {commit.id}: image {name!r} of {len(doc['processes'])} process(es) "
             f"({doc['pages']} pages, {elapsed:.0f} ms){', left stopped' if args.leave_stopped else ''}"
             f"{', processes killed' if args.kill else ''}")
    if files:
        human += (f"\nnote: file contents are not part of the image (only a slsfs mount checkpoints them); "
                  f"the {len(files)} open file(s) must still exist at restore")
    doc["file_contents_included"] = False
    doc["sysv_ipc_included"] = any("ipc" in p for p in image.processes)
    if not doc["sysv_ipc_included"]:
        human += ("\nnote: SysV semaphores and message queues of the host's IPC namespace are not part of the "
                  "image (run the program in one of its own, `unshare --ipc`, to have them in it)")
    _emit(args, doc, human)
    return 0


def cmd_restore(args, name: str) -> int:
    """Restore the process image `name` through the store the dispatch opened to find it
    (read_only_store: an open reads every pack index, ~1 s for a 2 GiB image's 530,000
    pages, which a second open paid again)."""
    import checkpointer
    store = read_only_store(store_path(args.store))
    try:
        with _command_errors():
            restored = checkpointer.restore(store, name, new_pid_namespace=not args.no_pidns,
                                            lazy=args.lazy)
    finally:
        close_read_only_store(args.store)       # (a lazy restore's page server reads its own copy)
    lazy = restored.page_server is not None
    doc = {"image": name, "pids": restored.pids, "ns_init": restored.ns_init, "launcher": restored.launcher.pid,
           "lazy": lazy, "warnings": restored.warnings}
    _emit(args, doc, f"restored {name!r}: pid {' '.join(map(str, restored.pids))} running"
                     + (", its memory coming in lazily" if lazy else "")
                     + ("" if args.detach else " (waiting until it exits; Ctrl-C kills it)"))
    if args.detach:
        return 0
    try:
        status = restored.wait()
    except KeyboardInterrupt:
        restored.kill()
        raise
    return 128 - status if status < 0 else status     # how it ended, as a shell reports it


def _image_doc(name: str, image) -> dict:
    procs = [{"pid": p["pid"], "ppid": p["ppid"], "zombie": bool(p.get("zombie")),
              "comm": p.get("comm", ""), "threads": len(p.get("threads", []))} for p in image.processes]
    return {"name": name, "root": image.root.hex(), "created": image.meta["created"],
            "processes": procs, "pages": image.page_count()}


def cmd_ps(args, other) -> int:
    groups_out = io.StringIO()
    with contextlib.redirect_stdout(groups_out):
        other(args)
    from checkpointer import images, load_image
    store = read_only_store(store_path(args.store))    # the one the groups' part opened, if it did
    docs = [_image_doc(name, load_image(store, root)) for name, root in sorted(images(store).items())]
    if args.json:
        doc = json.loads(groups_out.getvalue()) if groups_out.getvalue().strip() else {}
        doc["images"] = docs
        print(json.dumps(doc, indent=2, default=str))
        return 0
    lines = [groups_out.getvalue().rstrip()] if groups_out.getvalue().strip() else []
    width = max([len("IMAGE")] + [len(d["name"]) for d in docs]) + 2
    if docs:
        lines.append(f"{'IMAGE':<{width}}{'CREATED':<21}{'PAGES':>8}  PROCESSES")
    elif "GROUP" not in groups_out.getvalue():           # (with groups listed, it is noise)
        lines.append("no process images")
    for d in docs:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["created"]))
        procs = ", ".join(f"{p['pid']} {p['comm'] or '(zombie)'}" + (f" ({p['threads']} threads)"
                          if p["threads"] > 1 else "") for p in d["processes"])
        lines.append(f"{d['name']:<{width}}{created:<21}{d['pages']:>8}  {procs}")
    print("\n".join(lines))
    return 0
