"""The root file system of a `--root` group: the volume is `/`, with the host's system
directories read-only, /proc of the group's PID namespace, a small /dev, and /tmp in the
volume (so it is checkpointed like every other file).

The group has its own mount namespace (a slave copy of the daemon's, made when the group
starts or is restored): what it mounts, its /proc included, stays inside. The daemon
mounts the host directories and /dev on directories of its own mount point before that
copy is made, and the group's processes are chroot()ed there. Every other mount of the
copy is detached in it (`foreign_mounts`), as a container runtime's pivot_root does, so
that a group does not keep the host's other mounts alive after the host unmounts them
(another FUSE mount's daemon serving on, a disk busy): what stays is the mount chain down
to the root, the root's own mounts, and the chains to the files the group's processes
hold outside it (their output file, /dev/null, sls-init). Paths the
checkpointer records (`<mount>/usr/lib/.../libc.so.6`, `<mount>/dev/null`) then name the
same files at restore, once the daemon has mounted the same things again before the
processes come back, and a lazy unmount of the FUSE mount takes every one of these
mounts with it.

Simplifications: the host-directory and /dev mounts are in the daemon's namespace too
(visible on the host under the mount point: the checkpointer and the restorer work with
those paths); a chroot, not a pivot_root (as for any root-owned process, the chroot is
the confinement; and the paths the checkpointer reads stay the host's); the host
directories shadow whatever the volume holds at those names; /dev has null, zero, full,
random, urandom, tty and ptmx, with the host's /dev/pts (bound: a pty opened in the group
is one of the host's, as the checkpointer restores them; not a private devpts instance), and
/dev/shm is a link to /tmp; what the application mounts
itself is not checkpointed (gone after a restore); at restore /proc is mounted for the new
PID namespace only once the processes run again (a few ms without it), and until then the
host's other mounts are still in its namespace.
"""
from __future__ import annotations

import os
import shutil

import trio

from checkpointer.mount_table import MountTable, held_paths, within

from .groups import GroupError

HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0), ("ptmx", 5, 2))     # (ptmx: the devpts at ./pts gives the pairs)
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
    + "".join(f'    ln -s {target} "$root/dev/{name}"\n' for name, target in DEV_LINKS) + "fi\n" + r"""
if mountpoint -q /dev/pts && ! mountpoint -q "$root/dev/pts"; then
    mkdir -p "$root/dev/pts"
    mount --bind /dev/pts "$root/dev/pts"
fi
"""

# $1: the mount points to detach, one a line (`foreign_mounts`); unquoted, split at
# newlines only, never globbed; errors ignored (a mount the host dropped meanwhile)
_DETACH = 'set -f; IFS="\n"; umount --lazy $1 2>/dev/null; unset IFS; set +f; '
# run as PID 1 of the group's new PID and mount namespaces ($0: the root): the host's other
# mounts detached, its /proc, then the command in the root
_ENTER = _DETACH + 'shift; mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
_ENTER_INIT = _DETACH + 'shift; mount -t proc proc "$0/proc" && exec "$@"'
# run in a restored group's mount namespace: the same, done from outside ($0: its /proc)
_RESTORED = _DETACH + 'mount -t proc proc "$0"'
# what these scripts run, resolved in the group's namespace: kept reachable in it
_TOOLS = ("sh", "umount", "mount", "chroot")


async def prepare(root: str) -> None:
    """Mount the host directories and /dev under `root` and create /proc and /tmp there."""
    await _run(["sh", "-c", _PREPARE, "sh", root, *HOST_DIRS], f"preparing the root file system at {root}")


def start_argv(root: str, argv: list[str], init: str | None = None) -> list[str]:
    """What a --root group's launcher runs as PID 1 of its new PID and mount namespaces
    (slsfs.group_process): the host's other mounts detached, /proc of
    the new namespace, then chroot + argv (or `init`, which chroot()s itself and runs argv)."""
    detach = "\n".join(foreign_mounts(root, [os.path.realpath(init)] if init else []))
    if init:
        return ["sh", "-c", _ENTER_INIT, root, detach, init, "--root", root, "--", *argv]
    return ["sh", "-c", _ENTER, root, detach, *argv]


async def detach_late_mounts(root: str, launcher: int, pids: list[int]) -> None:
    """Detach from a just-started group's mount namespace the host mounts that appeared
    after `start_argv` listed the host's and before the namespace copied them (kept alive
    there, as foreign_mounts says), as seen by its `launcher` (in the namespace, not
    chroot()ed); `pids`: the group's processes, whose files stay reachable. Nothing runs
    in the usual case, where there are none."""
    detach = foreign_mounts(root, held_paths(pids), f"/proc/{launcher}/mountinfo")
    if detach:
        await _run(["nsenter", "--target", str(launcher), "--mount", "--", "sh", "-c", _DETACH, "sh",
                    "\n".join(detach)], "detaching host mounts from the group's mount namespace")


def entered(pid: int, root: str, init: str | None = None) -> bool:
    """True once `pid` is chroot()ed into `root` and has exec'd the group's command (or, when
    given, the `init` that chroot()s itself)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        return os.readlink(f"/proc/{pid}/root") == root and (exe == init if init else exe.startswith(root + "/"))
    except OSError:
        return False


async def enter_restored(root: str, pids: list[int], launcher: int) -> None:
    """In the mount namespace of the restored group `pids` (PID 1 of its PID namespace
    first; a restore builds new namespaces): detach the host's mounts it does not use, as
    that namespace has them (read through its `launcher`, there and not chroot()ed: a host
    mount gone since the namespace was made is still in it), and mount /proc of its PID
    namespace at `root`/proc."""
    detach = "\n".join(foreign_mounts(root, held_paths(pids), f"/proc/{launcher}/mountinfo"))
    await _run(["nsenter", "--target", str(pids[0]), "--pid", "--mount", "--", "sh", "-c", _RESTORED,
                os.path.join(root, "proc"), detach], f"mounting /proc at {root}/proc")


def foreign_mounts(root: str, keep: list[str], mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points to detach, in order, from a copy of this mount namespace so that
    it keeps only what a group rooted at `root` uses: the mounts at and under `root`, and
    the chains of mounts down to `root`, to each path of `keep` and to the tools this
    module runs in it (`keep`: paths as /proc shows them, no symbolic links). A point comes
    once per mount stacked there; /proc comes last (the tools may read it)."""
    table = MountTable(mountinfo)
    kept = table.chain(table.holding(root))
    for mount_id, mount in table.mounts.items():
        if within(mount.point, root):
            kept |= table.chain(mount_id)
    tools = [os.path.realpath(path) for path in filter(None, map(shutil.which, _TOOLS))]
    kept |= table.kept_for(keep + tools)     # (paths under `root` not resolved: the daemon serves them)
    detach = table.detach_points(m for m, mount in table.mounts.items() if m not in kept and mount.parent in kept)
    return sorted((p for p in detach if "\n" not in p), key=lambda p: p == "/proc")


async def release(root: str) -> None:
    """Detach every mount under `root` (not `root` itself), deepest first."""
    for path in sorted(mounts_under(root), key=len, reverse=True):
        await trio.run_process(["umount", "--lazy", path], check=False, capture_stdout=True, capture_stderr=True)


def mounts_under(root: str) -> list[str]:
    """The mount points below `root` (not `root` itself) in this mount namespace."""
    return [mount.point for mount in MountTable().mounts.values()
            if within(mount.point, root) and mount.point != root.rstrip("/")]


async def _run(argv: list[str], what: str) -> None:
    result = await trio.run_process(argv, check=False, capture_stdout=True, capture_stderr=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise GroupError(f"{what} failed: {detail[-1] if detail else f'exit status {result.returncode}'}")
