"""Starting a store's slsfs daemon from a command (`sls restore`, `sls run`), forked early.

What: `prefork()`, called first thing by `sls restore` and `sls run` (slsfs.cli), forks
the process that will become the daemon; the fork imports slsfs.daemon (trio, pyfuse3,
the checkpointer: ~200 ms, most of a daemon's start) while the command imports its
verbs and checks what it was asked (the store, a daemon running, a plain mount to take
over). `take()` hands the command that fork (or forks one then); `start(store, *args)`
sends it the store and its arguments and waits until it serves. A fork the command does
not start (it failed, or found a daemon running) is killed when the command ends
(`end_unstarted`), not left importing on the other CPU.
Why a fork: no second interpreter start, and what the command has imported is not
imported again; forked at the command's start rather than before its daemon is
needed, the whole import overlaps the command's own work (~70 ms of `sls restore`
after a crash, on two CPUs).
The fork leads a session of its own and raises its share of the CPUs at once
(slsfs.daemon_priority), before its imports: on a busy machine (load 8 on 2 CPUs) its
~150 ms of import CPU took 0.65-1.5 s of wall at one session's share (median 993 ms;
205 ms at the daemon's), most of a restore after a crash.
A command with threads (none of ours has) starts `python -m slsfs.daemon` at `start`
instead: a fork copies only the calling thread.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

from . import daemon_priority
from .cli import CommandError, skip_teardown_at_exit
from .daemon_ready import DAEMON_MODULE_FLAGS, LOG_NAME, REFUSED, parse_ready_line, read_line

CONTROL_SOCKET_NAME = "control.sock"     # mount.control.SOCKET_NAME, not imported before the fork
DAEMON_START_TIMEOUT_S = 120.0
DAEMON_STOP_TIMEOUT_S = 60.0
_unstarted: list["DaemonStart"] = []     # forks not yet handed to a command, or not yet started


class DaemonStart:
    """A daemon to be: forked now (when this process has one thread), run by `start`."""

    def __init__(self) -> None:
        self._ready, ready_write = os.pipe()
        self._args_read, self._args = os.pipe()
        self.pid = self._fork(ready_write) if _one_thread() else None
        self.taken = False
        os.close(self._args_read)
        if self.pid is not None:
            os.close(ready_write)
        else:                          # started at start()
            os.close(self._args)
            self._args, self._ready_write = -1, ready_write
        _unstarted.append(self)

    def _fork(self, ready_write: int) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            skip_teardown_at_exit()
            return pid
        import traceback                       # the child (here: see slsfs.cli's imports); never returns
        try:
            os.setsid()
            daemon_priority.raise_share()      # now: its imports wait for a CPU as its work would
            os.chdir("/")                      # not holding the directory we ran in (a mount to take over)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):               # until the store, and so the log, is known
                os.dup2(devnull, fd)
            keep = sorted((self._args_read, ready_write))
            os.closerange(3, keep[0])
            os.closerange(keep[0] + 1, keep[1])
            os.closerange(keep[1] + 1, os.sysconf("SC_OPEN_MAX"))
            failure, forked = "", time.perf_counter()
            try:
                from . import daemon
            except BaseException:              # told in the log once it is known
                failure = traceback.format_exc()
            imported = time.perf_counter()
            import json
            with os.fdopen(self._args_read, "rb") as pipe:
                request = pipe.read()
            if not request:                    # the command ended without starting us
                os._exit(0)
            store, args = json.loads(request)
            log_fd = os.open(os.path.join(store, LOG_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            if failure:
                sys.stderr.write(failure)
                os.write(ready_write, f"error: the daemon could not start: {failure.splitlines()[-1]}\n".encode())
                os._exit(1)
            argv = [store, *args, "--ready-fd", str(ready_write)]
            sys.argv = [sys.executable, "-m", "slsfs.daemon", *argv]
            daemon.run(argv, daemon.Startup({"imports": round((imported - forked) * 1000, 2),
                                             "command_wait": round((time.perf_counter() - imported) * 1000, 2)}))
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)

    def start(self, store: str, *args: str) -> dict | None:
        """Run the daemon of `store` with `args`; its `ps` reply once it serves (None from a
        daemon whose line carries none); CommandError if it did not start."""
        _unstarted.remove(self)
        log_path = os.path.join(store, LOG_NAME)
        if self.pid is None:
            import subprocess
            with open(log_path, "ab") as log_file:
                self.pid = subprocess.Popen(
                    [sys.executable, *DAEMON_MODULE_FLAGS, "slsfs.daemon", store, *args, "--ready-fd", str(self._ready_write)],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, pass_fds=(self._ready_write,),
                    start_new_session=True).pid
            os.close(self._ready_write)
        else:
            import json
            try:
                os.write(self._args, json.dumps([store, list(args)]).encode())
            except BrokenPipeError:            # it failed already (its log says why): no answer below
                pass
            os.close(self._args)
        try:
            message = read_line(self._ready, DAEMON_START_TIMEOUT_S)
        finally:
            os.close(self._ready)
        serving, status = parse_ready_line(message)
        if not serving:
            self._end(wait=bool(message))
            raise refusal(message, log_path)
        return status

    def cancel(self) -> None:
        """This daemon will not be started: kill and reap the fork (busy importing)."""
        os.close(self._ready)
        if self.pid is None:
            os.close(self._ready_write)
            return
        os.close(self._args)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)

    def _end(self, wait: bool) -> None:
        """A daemon that did not start: if `wait` (it said why, and is unmounting and
        exiting) let it end, for a while; then kill and reap it."""
        pidfd = os.pidfd_open(self.pid)
        try:
            if wait:
                select.select([pidfd], [], [], DAEMON_STOP_TIMEOUT_S)
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        finally:
            os.close(pidfd)


def refusal(message: str, log_path: str) -> CommandError:
    """The command's error for a daemon whose ready line `message` is not "ok" (the
    daemon logs to `log_path`)."""
    if message.startswith(REFUSED):
        return CommandError(message.removeprefix(REFUSED))
    reason = message.removeprefix("error: ") or "no answer"
    return CommandError(f"the slsfs daemon did not start: {reason} (see {log_path})")


def _one_thread() -> bool:
    """Whether this process runs one thread (as the kernel counts them: threading is not
    imported before the fork, see slsfs.cli's imports)."""
    return len(os.listdir("/proc/self/task")) == 1


def prefork(argv: list[str]) -> None:
    """Fork the daemon to be now, for a command that may start one (see the module),
    unless a daemon answers on the control socket of the store named in `argv` (--store):
    a group daemon runs the command's group or restores it in place (slsfs.daemon's
    restore_in_place), `sls mount`'s daemon becomes the group daemon itself
    (slsfs.mount_daemon), and the fork's imports would take the other CPU from them."""
    store = _store_argument(argv)
    if store is None or not _daemon_answers(store):
        DaemonStart()


def _store_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--":                        # (`sls run ... -- CMD ARGS`: the command's own)
            break
        if arg == "--store" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--store="):
            return arg.removeprefix("--store=")
    return None


def _daemon_answers(store: str) -> bool:
    """Whether a daemon listens on `store`'s control socket, asked with the socket
    module's C part: after a crash the socket is stale and refuses at once, and the fork
    must come before the command's imports (mount.control's among them)."""
    import _socket
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.connect(os.path.join(store, CONTROL_SOCKET_NAME))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def take() -> DaemonStart:
    """The daemon to be forked by `prefork` (once), or one forked now."""
    early = next((d for d in _unstarted if not d.taken), None) or DaemonStart()
    early.taken = True
    return early


def end_unstarted() -> None:
    """Kill (and reap) the forks this command did not start: it ends without them."""
    while _unstarted:
        _unstarted.pop().cancel()
