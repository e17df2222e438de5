"""The root file system of a `--root` group: the volume is `/`, with the host's system
directories read-only, /proc of the group's PID namespace, a small /dev, and /tmp in the
volume (so it is checkpointed like every other file).

The group has its own mount namespace (a private copy of the daemon's, made when the
group starts or is restored): what it mounts, its /proc included, stays inside. The
daemon mounts the host directories and /dev on directories of its own mount point before
that copy is made, and the group's processes are chroot()ed there. Paths the
checkpointer records (`<mount>/usr/lib/.../libc.so.6`, `<mount>/dev/null`) then name the
same files at restore, once the daemon has mounted the same things again before the
processes come back, and a lazy unmount of the FUSE mount takes every one of these
mounts with it.

Simplifications: the host-directory and /dev mounts are in the daemon's namespace too
(visible on the host under the mount point: the checkpointer and the restorer work with
those paths); a chroot, not a pivot_root (as for any root-owned process, the chroot is
the confinement); the host directories shadow whatever the volume holds at those names;
/dev has null, zero, full, random, urandom and tty (no pts), /dev/shm is a link to /tmp;
what the application mounts itself is not checkpointed (gone after a restore); at
restore /proc is mounted for the new PID namespace only once the processes run again (a
few ms without it).
"""
from __future__ import annotations

import os

import trio

from .groups import GroupError

HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("shm", "/tmp"))

# $1: the root; then the host directories; run by the daemon (never from its trio
# thread: every path here is a request to its own mount)
_PREPARE = r"""
set -e
root=$1; shift
for name in "$@"; do
    if [ -L "/$name" ]; then
        [ -e "$root/$name" ] || [ -L "$root/$name" ] || ln -s "$(readlink "/$name")" "$root/$name"
    elif [ -d "/$name" ]; then
        mkdir -p "$root/$name"
        if ! mountpoint -q "$root/$name"; then
            mount --bind "/$name" "$root/$name"
            mount -o remount,bind,ro "$root/$name"
        fi
    fi
done
mkdir -p "$root/proc" "$root/dev" "$root/tmp"
chmod 1777 "$root/tmp"
if ! mountpoint -q "$root/dev"; then
    mount -t tmpfs -o mode=755,nosuid,size=1m slsfs-dev "$root/dev"
""" + "".join(f'    mknod -m 666 "$root/dev/{name}" c {major} {minor}\n' for name, major, minor in DEVICES) \
    + "".join(f'    ln -s {target} "$root/dev/{name}"\n' for name, target in DEV_LINKS) + "fi\n"

# run as PID 1 of the group's new PID and mount namespaces: its /proc, then the command in the root
_ENTER = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
_ENTER_INIT = 'mount -t proc proc "$0/proc" && exec "$@"'


async def prepare(root: str) -> None:
    """Mount the host directories and /dev under `root` and create /proc and /tmp there."""
    await _run(["sh", "-c", _PREPARE, "sh", root, *HOST_DIRS], f"preparing the root file system at {root}")


def start_argv(root: str, argv: list[str], init: str | None = None) -> list[str]:
    """What `unshare --pid --fork` runs: /proc of the new namespace, then chroot + argv (or
    `init`, which chroot()s itself and runs argv)."""
    if init:
        return ["sh", "-c", _ENTER_INIT, root, init, "--root", root, "--", *argv]
    return ["sh", "-c", _ENTER, root, *argv]


def entered(pid: int, root: str, init: str | None = None) -> bool:
    """True once `pid` is chroot()ed into `root` and has exec'd the group's command (or, when
    given, the `init` that chroot()s itself)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        return os.readlink(f"/proc/{pid}/root") == root and (exe == init if init else exe.startswith(root + "/"))
    except OSError:
        return False


async def mount_proc(root: str, init_pid: int) -> None:
    """Mount, at `root`/proc in the mount namespace of host `init_pid`, the /proc of its PID
    namespace (after a restore, which builds new namespaces)."""
    await _run(["nsenter", "--target", str(init_pid), "--pid", "--mount", "--", "mount", "-t", "proc", "proc",
                os.path.join(root, "proc")], f"mounting /proc at {root}/proc")


async def release(root: str) -> None:
    """Detach every mount under `root` (not `root` itself), deepest first."""
    for path in sorted(mounts_under(root), key=len, reverse=True):
        await trio.run_process(["umount", "--lazy", path], check=False, capture_stdout=True, capture_stderr=True)


def mounts_under(root: str) -> list[str]:
    prefix = root.rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point.startswith(prefix):
                found.append(point)
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


async def _run(argv: list[str], what: str) -> None:
    result = await trio.run_process(argv, check=False, capture_stdout=True, capture_stderr=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise GroupError(f"{what} failed: {detail[-1] if detail else f'exit status {result.returncode}'}")
