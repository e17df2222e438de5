"""The `sls` command line.

Each group of verbs lives in its own module with a `build(verb, parser)` function that
adds a verb's arguments to its parser (VERBS says which modules build which verb); a verb
sets `func(args) -> int`. A command builds, and so imports, only its own verb's modules.
Errors a user can act on are raised as `CommandError` (or any `objectstore.StoreError`)
and printed as one line on stderr with a non-zero exit status.
"""
from __future__ import annotations

import atexit
import importlib
import os
import sys

TYPE_CHECKING = False             # (typing.TYPE_CHECKING without importing typing: see below)
if TYPE_CHECKING:
    import argparse

    from objectstore import Store

# Imported where used, not here: objectstore, mount.control and argparse (~40 ms idle,
# 0.1-0.3 s at load 10 at a command's share of the CPUs); nor typing, json or threading,
# by this module or by those the fork needs (slsfs.daemon_start, daemon_ready,
# daemon_priority): the command's start up to the fork took 0.28 s at load 11. `sls restore` and `sls run`
# fork their daemon to be first thing (slsfs.daemon_start), and that fork, at the
# daemon's raised share, imports them on the way to serving faster than we would before
# it: what is imported before the fork is on the restore's path at the command's share.

FS, STORE, GROUP, PROC = "slsfs.fs_commands", "slsfs.store_commands", "slsfs.group_commands", "slsfs.proc_commands"
#: Every verb, in the order `sls --help` lists them: its one-line help, and the modules
#: that build its parser (each has `build(verb, parser)`), in order: a later one extends
#: what the ones before it added (group_commands gives `checkpoint` its --store, then
#: proc_commands its PIDs).
VERBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "init": ("create a new store with an empty file system", (FS,)),
    "mount": ("mount a store's volume (in the background by default)", (FS,)),
    "umount": ("unmount (refuses while files are open, listing them)", (FS,)),
    "checkpoint": ("take a durable checkpoint of a mount now", (FS, GROUP, PROC)),
    "log": ("list checkpoints, newest first", (FS,)),
    "snapshot": ("snapshot a directory of a mount (O(1))", (FS,)),
    "clone": ("writable O(1) copy of a directory, snapshot or checkpoint fs/", (FS,)),
    "diff": ("paths added, removed and changed between two checkpoints or directories", (FS,)),
    "gc": ("thin old checkpoints and free unreachable space", (FS,)),
    "fsck": ("verify every chunk and tree of a store", (FS,)),
    "stat": ("space used, dedup and compression, checkpoints", (FS,)),
    "retention": ("show or change which old checkpoints a store keeps", (FS,)),
    "send": ("write a checkpoint as a stream (full or incremental)", (STORE, GROUP)),
    "recv": ("apply a stream from `sls send` to a store (created if missing)", (STORE,)),
    "run": ("run a command in a new persistence group (files + memory checkpointed)", (GROUP,)),
    "persist": ("add a running process tree to a new persistence group", (GROUP,)),
    "ps": ("persistence groups, their processes and checkpoints", (GROUP, PROC)),
    "barrier": ("wait until a group's last checkpoint is durable (fails, with the reason, while its "
                "checkpoints fail)", (GROUP,)),
    "stop": ("kill one group (its checkpoints stay), or every group of a store and its daemon", (GROUP,)),
    "restore": ("bring a persistence group back from a checkpoint", (GROUP, PROC)),
}


class CommandError(Exception):
    """A failure with a message meant for the user (what happened, what to do)."""


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Give a verb `--json` (once: the command modules extend one another's verbs)."""
    if not any("--json" in action.option_strings for action in parser._actions):
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def store_path(store: str) -> str:
    """`store` as an absolute path, once checked to be a store (a CommandError that says
    how to make one otherwise)."""
    path = os.path.abspath(store)
    if not os.path.exists(os.path.join(path, "FORMAT")):
        raise CommandError(f"{store} is not a slsfs store; create one with `sls init {store}`")
    return path


_read_only: dict[str, Store] = {}


def read_only_store(path: str) -> Store:
    """The store at `path` opened read-only, once per command: an open reads every pack
    index (~0.35 s for 100 MB of packs), and `sls restore` looks at the store twice before
    its daemon starts (an image or a group? which checkpoint?). Left open until the command
    exits: the checks it serves all come before any change."""
    from objectstore import Store
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
    spent after the group already ran, freeing what the kernel frees at exit anyway; and
    by `sls restore` whatever it does: without a fork the teardown still took 7-25 ms
    of its exit, beside the restored application on the CPUs."""
    global _skip_teardown
    _skip_teardown = True


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser of `sls` for `verb` alone, so that a command builds and imports only
    what runs its verb (all four modules cost `sls restore` ~50 ms of imports, and the
    other verbs' parsers ~10 ms, on the path of a restore after a crash); every verb,
    with its arguments, when `verb` is None; every verb but no verb's arguments when it
    is "" (not a verb: `sls --help`, and errors, which list them)."""
    import argparse
    parser = argparse.ArgumentParser(prog="sls", description="slsfs: a single level store for Linux",
                                     formatter_class=_help_formatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (helptext, modules) in VERBS.items():
        if verb and name != verb:
            continue
        verb_parser = sub.add_parser(name, help=helptext, formatter_class=_help_formatter)
        if verb in (None, name):
            for module in modules:
                importlib.import_module(module).build(name, verb_parser)
    return parser


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's help formatter at the terminal's width, found as shutil would (COLUMNS,
    else standard output's terminal, else 80) without importing shutil, which argparse
    does for every argument added (it formats each one's usage to check it): shutil brings
    zlib, bz2 and lzma, ~3-5 ms of every command's start."""
    import argparse
    columns = os.environ.get("COLUMNS", "")
    if not columns.isdigit() or int(columns) == 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):          # no standard output, or not a terminal
            columns = 0
    return argparse.HelpFormatter(prog, width=(int(columns) or 80) - 2)     # (argparse leaves 2 too)


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (default: the process's own arguments); its exit status.
    As the process's own command (`argv` None), it may end the process itself: see
    skip_teardown_at_exit. `sls restore`, `sls run` and `sls persist` fork their daemon to be first
    (slsfs.daemon_start)."""
    from . import daemon_start            # (it imports this module)
    if argv is None and sys.argv[1:2] in (["restore"], ["run"], ["persist"]):
        daemon_start.prefork(sys.argv[2:])
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
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words[0] if words[:1] and words[0] in VERBS else "").parse_args(argv)
    try:
        return args.func(args) or 0
    except _user_errors() as exc:
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


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors told as one line: ours, the store's, and the control socket's (no mount
    there, no daemon). (Evaluated only once an exception is raised: see the imports.)"""
    from mount.control import ControlError
    from objectstore import StoreError
    return CommandError, ControlError, StoreError


if __name__ == "__main__":
    # `python -m slsfs.cli` runs this file as __main__: use the one slsfs.cli module,
    # so that CommandError raised by the verb modules is the class caught here.
    from slsfs.cli import main as cli_main

    sys.exit(cli_main())
