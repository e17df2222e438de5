"""The `sls` command line.

Each group of verbs lives in its own module with a `register(subparsers)` function
that adds its sub-commands; a sub-command sets `func(args) -> int`. Errors a user
can act on are raised as `CommandError` (or any `objectstore.StoreError`) and
printed as one line on stderr with a non-zero exit status.
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys

from mount.control import ControlError
from objectstore import Store, StoreError

#: Modules contributing verbs, in the order they appear in `sls --help`.
COMMAND_MODULES = [      # in the order `sls --help` lists their verbs
    "slsfs.fs_commands",
    "slsfs.store_commands",  # send, recv
    "slsfs.group_commands",  # after both: extends the checkpoint and send verbs
    "slsfs.proc_commands",  # after group_commands: PIDs and process images in checkpoint/restore/ps
]


class CommandError(Exception):
    """A failure with a message meant for the user (what happened, what to do)."""


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Give a verb `--json` (once: the command modules extend one another's verbs)."""
    if not any("--json" in action.option_strings for action in parser._actions):
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


_read_only: dict[str, Store] = {}


def read_only_store(path: str) -> Store:
    """The store at `path` opened read-only, once per command: an open reads every pack
    index (~0.35 s for 100 MB of packs), and `sls restore` looks at the store twice before
    its daemon starts (an image or a group? which checkpoint?). Left open until the command
    exits: the checks it serves all come before any change."""
    key = os.path.realpath(path)
    if key not in _read_only:
        _read_only[key] = Store.open(key, readonly=True)
    return _read_only[key]


def close_read_only_store(path: str) -> None:
    """Close what read_only_store opened for `path` (its pack files) once the command reads
    it no more: `sls restore IMAGE` waits as long as its processes run, and a pack the
    store's GC deleted meanwhile would keep its disk space while we held it open."""
    store = _read_only.pop(os.path.realpath(path), None)
    if store is not None:
        store.close()


_skip_teardown = False


def skip_teardown_at_exit() -> None:
    """Have `main` end the process without tearing the interpreter down (std streams
    flushed, atexit handlers run, then os._exit). Called once this command has forked a
    daemon: the fork shares every page of our heap copy-on-write, so the teardown's
    reference-count writes copied page after page, 40-90 ms of `sls restore` and `sls run`
    spent after the group already ran, freeing what the kernel frees at exit anyway."""
    global _skip_teardown
    _skip_teardown = True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sls", description="slsfs: a single level store for Linux")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (default: the process's own arguments); its exit status.
    As the process's own command (`argv` None), it may end the process itself: see
    skip_teardown_at_exit. `sls restore` and `sls run` fork their daemon to be first
    (slsfs.daemon_start)."""
    from . import daemon_start            # (it imports this module)
    if argv is None and sys.argv[1:2] in (["restore"], ["run"]):
        daemon_start.prefork()
    try:
        code = _run(argv)
    finally:
        daemon_start.end_unstarted()
    if argv is None and _skip_teardown:
        _exit_without_teardown(code)
    return code


def _exit_without_teardown(code: int) -> None:
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:            # the reader left: as main's BrokenPipeError
            code = code or 141
        except (OSError, ValueError):      # a full disk or a closed stream: nothing more to say
            code = code or 1
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (CommandError, ControlError, StoreError) as exc:   # ControlError: no mount there, no daemon
        print(f"sls: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:                # `sls log | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 141
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"sls: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sls: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m slsfs.cli` runs this file as __main__: use the one slsfs.cli module,
    # so that CommandError raised by the verb modules is the class caught here.
    from slsfs.cli import main as cli_main

    sys.exit(cli_main())
