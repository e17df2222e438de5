"""The mount daemon: `python -m mount.daemon STORE MNT ...` (`sls mount` starts it as slsfs.mount_daemon).

It opens the store for writing (the store's lock makes it the only writer), serves
the file system until the mount goes away (`sls umount`, `fusermount3 -u`, SIGTERM
or SIGINT), answers the control socket (`mount.control`), then writes a final durable
checkpoint and closes the store. Its log goes to `<store>/mount.log`.

With `--ready-fd N` it writes one line to fd N once the mount is live ("ok") or has
failed ("error: ..."), so that the starting command can return at the right time.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from functools import partial
from typing import Awaitable, Callable

import trio

from objectstore import Store, StoreError
from objectstore.retention import Prune

from .control import CONTROL_VERSION
from .control_server import control_listener, exchange
from .filesystem import FileSystem, MountError
from .options import DEFAULT_INTERVAL_MS, LOG_NAME

log = logging.getLogger("slsfs.mount")
STOP_FLUSH_S = 10.0
#: requests whose commit must hold every write made before them
COMMITTING_OPS = frozenset({"checkpoint", "snapshot", "clone", "gc", "fsck"})


def answer(fs: FileSystem, req: dict) -> dict:
    if req.get("v") != CONTROL_VERSION:
        return {"ok": False, "error": f"control protocol version {req.get('v')!r}; this daemon "
                                      f"speaks {CONTROL_VERSION} (restart the mount after upgrading)"}
    op = req.get("op")
    try:
        if op == "status":
            return {"ok": True, **fs.status()}
        if op == "checkpoint":
            commit = fs.checkpoint(req.get("label", "manual"), durable=True)
            if req.get("name"):
                fs.store.tag(req["name"], commit.id)
            return {"ok": True, "checkpoint": commit.id, "time": commit.time, "name": req.get("name")}
        if op == "snapshot":
            return {"ok": True, **fs.snapshot(req["path"], req.get("name"))}
        if op == "clone":
            return {"ok": True, **fs.clone(req["src"], req["dest"])}
        if op == "log":
            return {"ok": True, "log": [c.to_json() for c in fs.store.log()], "tags": fs.store.tags()}
        if op == "stats":
            return {"ok": True, **fs.store.stats(), "daemon": fs.status()}
        if op == "fsck":
            fs.checkpoint("fsck", durable=True)
            return {"ok": True, "problems": fs.store.fsck()}
        if op == "retention":                # the next thinning (every few seconds) applies a change
            if req.get("set"):
                fs.store.set_retention(req["set"])
            return {"ok": True, **fs.store.retention_status()}
    except (MountError, StoreError, ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown request {op!r}"}


async def diff(fs: FileSystem, req: dict,
               resolve: Callable[[str | int], tuple[int, dict]] | None = None) -> dict:
    """The answer to a `diff` request: the paths that differ between checkpoints `a` and `b`
    (ids, names, 'latest~N' or times; `resolve`: see FileSystem.diff) of this mount's volume."""
    try:
        return {"ok": True, **await fs.diff(req["a"], req["b"], resolve)}
    except (MountError, StoreError) as exc:
        return {"ok": False, "error": str(exc)}


async def collect(fs: FileSystem, req: dict) -> dict:
    """The answer to a `gc` request: a collection that the mount's requests go on beside."""
    try:
        return {"ok": True, **await fs.collect(prune_request(req))}
    except (MountError, StoreError) as exc:
        return {"ok": False, "error": str(exc)}


def prune_request(req: dict) -> Prune | None:
    """The explicit retention.Prune a `gc` request carries (`sls gc --keep-last ...`), if any."""
    if not req.get("prune"):
        return None
    try:
        return Prune.from_json(req["prune"])
    except (TypeError, ValueError) as exc:
        raise StoreError(f"bad prune request: {exc}") from None


async def respond(fs: FileSystem, req: dict, ending_ops: EndingOps | None = None) -> dict:
    """The reply to one control request; a committing one first takes in the writes the
    kernel still caches, and `gc` runs beside the mount's requests. `ending_ops`: see
    serve_control."""
    if ending_ops and req.get("op") in ending_ops and req.get("v") == CONTROL_VERSION:
        try:
            return {"ok": True, **ending_ops[req["op"]](fs, req)}
        except MountError as exc:
            return {"ok": False, "error": str(exc)}
    if req.get("op") in COMMITTING_OPS:
        await fs.flush_kernel_writes()
    if req.get("op") == "gc" and req.get("v") == CONTROL_VERSION:
        return await collect(fs, req)
    if req.get("op") == "diff" and req.get("v") == CONTROL_VERSION:
        return await diff(fs, req)
    return answer(fs, req)


#: Ops a layer above answers (op -> a function of the file system and the request giving
#: the reply's fields, or raising MountError to refuse), after which the daemon unmounts
#: and `main` returns: slsfs.mount_daemon's hand_over.
EndingOps = dict[str, Callable[[FileSystem, dict], dict]]


async def serve_control(fs: FileSystem, task_status=trio.TASK_STATUS_IGNORED, ending_ops: EndingOps | None = None,
                        end: Callable[[], Awaitable[None]] | None = None) -> None:
    """Answer the store's control socket until cancelled, each connection in a task of its
    own (a client that connects and says nothing holds up no other); once one of
    `ending_ops` is answered, `end()`."""
    ending_ops = ending_ops or {}

    async def serve_one(stream: trio.SocketStream) -> None:
        request, reply = await exchange(stream, partial(respond, fs, ending_ops=ending_ops), LOG_NAME)
        if reply.get("ok") and request is not None and request.get("op") in ending_ops and end is not None:
            await end()
    async with control_listener(fs.store.path, backlog=16) as listener, trio.open_nursery() as nursery:
        task_status.started()
        while True:
            nursery.start_soon(serve_one, await listener.accept())


async def _unmount(fs: FileSystem, cancel_scope: trio.CancelScope) -> None:
    """Take in the kernel's dirty pages (while serving), then end serving: unmount."""
    with trio.move_on_after(STOP_FLUSH_S):
        await fs.flush_kernel_writes()
    cancel_scope.cancel()


async def _stop_on_signals(fs: FileSystem, cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            await _unmount(fs, cancel_scope)


def sole_exception(exc: BaseException) -> BaseException:
    """`exc`, or the one exception an exception group holds (trio's nurseries wrap what
    their tasks raise: a failed mount is one RuntimeError inside two groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _run(fs: FileSystem, args, ready, ending_ops: EndingOps | None,
               on_serving: Callable[[FileSystem], None] | None) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, fs, ending_ops=ending_ops,
                                    end=partial(_unmount, fs, nursery.cancel_scope)))
        nursery.start_soon(_stop_on_signals, fs, nursery.cancel_scope)

        async def serve_then_stop(task_status=trio.TASK_STATUS_IGNORED) -> None:
            await fs.serve(args.mountpoint, allow_other=args.allow_other, task_status=task_status,
                           mount_options=args.mount_option)
            nursery.cancel_scope.cancel()         # the kernel ended the session (umount)
        await nursery.start(serve_then_stop)
        ready("ok")
        if on_serving is not None:
            on_serving(fs)



def readiness_reporter(fd: int | None) -> Callable[[str], None]:
    """A function that writes one line ("ok" or "error: ...") to `fd` the first time it is
    called and closes it: how a daemon tells the command that started it how it went."""
    pending = [fd] if fd is not None else []

    def ready(message: str) -> None:
        while pending:
            target = pending.pop()
            try:
                os.write(target, message.encode() + b"\n")
                os.close(target)
            except OSError:
                pass
    return ready


GC_THRESHOLDS = (5000, 10, 100)  # gc.set_threshold for a daemon (default 700, 10, 10)


def pace_collector() -> None:
    """Run Python's cyclic garbage collector less often in a daemon: at its default pace
    (a young collection every 700 allocations; every FUSE request makes several) it
    walks the mount's tree caches often. Measured: a plain mount daemon creating and
    stat()ing 20,000 files then running SQLite for 5 s spent 0.53-0.71 s of CPU in the
    collector (481-547 collections), 0.22-0.38 s at this pace (56-71); the group daemon
    7-11% of its CPU under a Redis group checkpointed 10x a second, ~5% at this pace.
    The daemons make few reference cycles."""
    gc.set_threshold(*GC_THRESHOLDS)


def setup_logging(path: str | None) -> None:
    """Log INFO and above to the file `path` (None: standard error)."""
    handler = logging.StreamHandler() if path is None else logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)   # (again: a hand-over)

def main(argv: list[str] | None = None,
         also_keep: Callable[[Store, set[int]], set[int]] | None = None,
         ending_ops: EndingOps | None = None, on_serving: Callable[[FileSystem], None] | None = None,
         after_unmount: Callable[[Store], int | None] | None = None) -> int:
    """The mount daemon. `also_keep(store, kept ids)`: the commits a layer above needs
    kept beside those (FileSystem's `also_keep`; slsfs.mount_daemon passes its own).
    `ending_ops`: see serve_control. `on_serving` is called (in the trio thread) once the
    mount is live. The store is closed when main returns, unless `after_unmount(store)`,
    called once the mount ended cleanly, takes it (it then closes it): what it returns,
    if not None, is main's (slsfs.mount_daemon's hand-over keeps the store, and its lock,
    for the group daemon it becomes)."""
    parser = argparse.ArgumentParser(prog="python -m mount.daemon")
    parser.add_argument("store")
    parser.add_argument("mountpoint")
    parser.add_argument("--volume", default="main")
    parser.add_argument("--allow-other", action="store_true")
    parser.add_argument("--checkpoint-interval", type=float, default=DEFAULT_INTERVAL_MS)
    parser.add_argument("--mount-option", action="append", default=[], metavar="OPT",
                        help="a generic kernel mount option (ro, noexec, ...); repeatable")
    parser.add_argument("--writeback-cache", action=argparse.BooleanOptionalAction, default=True,
                        help="let the kernel cache writes (default; see mount.filesystem)")
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--log-to-stderr", action="store_true")
    args = parser.parse_args(argv)
    pace_collector()

    ready = readiness_reporter(args.ready_fd)
    setup_logging(None if args.log_to_stderr else os.path.join(args.store, LOG_NAME))
    try:
        store = Store.open(args.store)
    except (StoreError, OSError) as exc:
        ready(f"error: {exc}")
        log.error("%s", exc)
        return 1
    try:
        fs = FileSystem(store, args.volume, checkpoint_interval_ms=args.checkpoint_interval or None,
                        writeback_cache=args.writeback_cache,
                        also_keep=None if also_keep is None else lambda kept: also_keep(store, kept))
        log.info("mounting volume %s of %s at %s (pid %d)", args.volume, args.store,
                 args.mountpoint, os.getpid())
        try:
            trio.run(_run, fs, args, ready, ending_ops, on_serving)
        except Exception as exc:
            failure = sole_exception(exc)
            if not isinstance(failure, (RuntimeError, MountError)):   # pyfuse3.init failures, bad options
                raise
            ready(f"error: {failure}")
            log.error("mount failed: %s", failure)
            return 1
        fs.close()
        log.info("unmounted; final checkpoint %s", store.head.id if store.head else None)
        if after_unmount is not None and (code := after_unmount(store)) is not None:
            store = None                       # (theirs, closed by them)
            return code
        return 0
    except Exception as exc:
        ready(f"error: {sole_exception(exc)}")
        log.exception("daemon failed")
        return 1
    finally:
        if store is not None:
            store.close()


if __name__ == "__main__":
    sys.exit(main())
