"""`sls send` and `sls recv`: move checkpoints between stores as byte streams."""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

from objectstore import Store
from objectstore.stream import read_header, recv, send

from .cli import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="write a checkpoint as a stream (full or incremental)")
    p.add_argument("checkpoint", help="checkpoint id, tag, 'latest' or ISO time")
    p.add_argument("--store", required=True, help="the store holding the checkpoint")
    p.add_argument("--from", dest="base", help="send only what this earlier checkpoint lacks")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("recv", help="apply a stream from `sls send` to a store (created if missing)")
    p.add_argument("store")
    p.add_argument("-i", "--input", help="read from this file instead of standard input")
    p.add_argument("--force", action="store_true", help="replace volumes that differ from the stream's base")
    p.set_defaults(func=cmd_recv)


def cmd_send(args: argparse.Namespace) -> int:
    with Store.open(args.store, readonly=True) as store:
        commit = store.resolve(args.checkpoint)
        base = store.resolve(args.base) if args.base else None
        if base is not None and base.id >= commit.id:
            raise CommandError(f"--from {args.base} is not older than {args.checkpoint}")
        with contextlib.ExitStack() as stack:
            if args.output:
                out = stack.enter_context(open(args.output, "wb"))
            else:
                if sys.stdout.isatty():
                    raise CommandError("refusing to write a binary stream to a terminal: "
                                       "redirect it (sls send ... > FILE) or use -o FILE")
                out = sys.stdout.buffer
            figures = send(store, commit, out, base=base)
    kind = f"incremental from {base.id}" if base else "full"
    print(f"sent checkpoint {commit.id} ({kind}): {figures['chunks']} chunks, "
          f"{figures['bytes']} bytes", file=sys.stderr)
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        inp = stack.enter_context(open(args.input, "rb")) if args.input else sys.stdin.buffer
        header = read_header(inp)
        path = Path(args.store)
        created = not (path / "FORMAT").exists()
        if created:
            store = stack.enter_context(Store.init(path, seed=int(header["seed"], 16)))
        else:
            store = stack.enter_context(Store.open(path))
        try:
            commit = recv(store, inp, header, force=args.force)
        except BaseException:
            if created:
                store.close()
                shutil.rmtree(path, ignore_errors=True)
            raise
    print(f"received as checkpoint {commit.id} in {os.fspath(path)}", file=sys.stderr)
    return 0
