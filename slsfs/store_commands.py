"""`sls send` and `sls recv`: move checkpoints between stores as byte streams."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys
from pathlib import Path

from objectstore import Store, StoreLocked
from objectstore.stream import read_header, recv, send

from . import groups, progress
from .cli import CommandError, add_json_flag


def build(verb: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of `verb` (send or recv: slsfs.cli.VERBS) to its parser."""
    if verb == "send":
        p.add_argument("checkpoint", help="a checkpoint: its id, its name (sls checkpoint --name), 'latest', "
                                          "'latest~N' or an ISO-8601 time; or a group (its newest)")
        p.add_argument("--store", required=True, help="the store holding the checkpoint")
        p.add_argument("--from", dest="base", metavar="CHECKPOINT",
                       help="send only what this earlier checkpoint (id, name, ...) lacks: an incremental "
                            "stream, for a store that received it")
        p.add_argument("-o", "--output", help="write to this file instead of standard output (made readable "
                                              "by its owner only: a stream holds the processes' memory)")
        p.set_defaults(func=cmd_send)
    else:
        p.add_argument("store")
        p.add_argument("-i", "--input", help="read from this file instead of standard input")
        p.add_argument("--force", action="store_true", help="replace volumes that differ from the stream's base")
        add_json_flag(p)
        p.set_defaults(func=cmd_recv)


def cmd_send(args: argparse.Namespace) -> int:
    with Store.open(args.store, readonly=True) as store:
        commit = store.resolve(args.checkpoint)
        base = store.resolve(args.base) if args.base else None
        if base is not None and base.id >= commit.id:
            raise CommandError(f"--from {args.base} is not older than {args.checkpoint}")
        with contextlib.ExitStack() as stack:
            if args.output:
                out = stack.enter_context(_private_output(args.output))
            else:
                if sys.stdout.isatty():
                    raise CommandError("refusing to write a binary stream to a terminal: "
                                       "redirect it (sls send ... > FILE) or use -o FILE")
                out = sys.stdout.buffer
            stack.callback(progress.done)
            figures = send(store, commit, out, base=base, progress=progress.bytes_counter("sending"))
    kind = f"incremental from {base.id}" if base else "full"
    print(f"sent checkpoint {commit.id} ({kind}): {figures['chunks']} chunks, "
          f"{figures['bytes']} bytes", file=sys.stderr)
    return 0


def _private_output(path: str):
    """`path` opened for writing, readable and writable by its owner only (also when it
    existed: a stream of a group's checkpoint holds process memory, secrets included)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def cmd_recv(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if not args.input and sys.stdin.isatty():       # (as sls send refuses to write to one)
            raise CommandError("no stream on standard input, which is a terminal: pipe one in "
                               f"(sls send ... | sls recv {args.store}) or give a file (-i FILE)")
        inp = stack.enter_context(open(args.input, "rb")) if args.input else sys.stdin.buffer
        header = read_header(inp)
        seed = int(header["seed"], 16)
        path = Path(args.store)
        set_aside = None
        if (path / "FORMAT").exists():
            store = stack.enter_context(_open_to_receive(path))
            if store.seed != seed and _holds_only_its_creation(store):
                store.close()
                set_aside = _set_aside(path)
        created = not (path / "FORMAT").exists()
        if created:
            store = stack.enter_context(Store.init(path, seed=seed))
        stack.callback(progress.done)            # (first out: before the store closes and any last words)
        try:
            commit = recv(store, inp, header, force=args.force, as_base=groups.as_base,
                          progress=progress.bytes_counter("receiving"))
        except BaseException:
            if created:
                store.close()
                shutil.rmtree(path, ignore_errors=True)
                if set_aside is not None:
                    set_aside.rename(path)
            raise
        if set_aside is not None:
            shutil.rmtree(set_aside, ignore_errors=True)
        names = sorted(n for n, c in store.tags().items() if c == commit.id)
    named = f" named {', '.join(names)}" if names else ""
    held = groups.group_names(commit.roots)
    left = sorted(set(header["names"]) - set(names))
    if args.json:       # (on stdout, which a stream never uses here)
        print(json.dumps({"store": os.fspath(path), "checkpoint": commit.id, "names": names, "groups": held,
                          "names_not_kept": left, "incremental": header.get("base") is not None}, indent=2))
        return 0
    print(f"received as checkpoint {commit.id}{named} in {os.fspath(path)}"
          + (f"; its groups: {', '.join(held)} (bring one back: sls restore GROUP --store {os.fspath(path)})"
             if held else ""), file=sys.stderr)
    if left:
        print(f"not named {', '.join(left)} here: this store uses those names already "
              "(or cannot hold them); `sls log` lists its names", file=sys.stderr)
    return 0


def _open_to_receive(path: Path) -> Store:
    """The existing store at `path` opened for writing, or a CommandError saying what to
    stop when a daemon (or another command) holds it."""
    try:
        return Store.open(path)
    except StoreLocked:
        raise CommandError(f"{path} is in use (a daemon serves it, or another sls command writes to it): "
                           f"stop it first (`sls stop --store {path}` for a group's daemon, its groups' "
                           "last durable checkpoints kept; `sls umount MNT` for `sls mount`), or receive "
                           "into another store") from None


def _holds_only_its_creation(store: Store) -> bool:
    """True for a store that `sls init` made and nothing used since: one commit, whose roots
    are still the current ones, no tags, no snapshots. Receiving into such a store replaces
    it by one with the sender's seed, so that later incremental streams apply too."""
    history = store.log()
    return (len(history) == 1 and history[0].roots == store.roots()
            and not store.tags() and not store.snapshots())


def _set_aside(path: Path) -> Path:
    """Rename an unused store out of the way (back in place if the receive fails)."""
    aside = path.with_name(f".{path.name}.replaced-by-recv")
    try:
        path.rename(aside)
    except OSError as exc:
        raise CommandError(f"{path} is an empty store made by `sls init` for another seed, and "
                           f"it cannot be replaced ({exc.strerror}): receive into a path that "
                           "does not exist yet (sls recv creates the store)") from None
    return aside
