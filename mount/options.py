"""What a mount can be asked for, in a module light enough for the `sls` command line to
import without loading FUSE: the default checkpoint interval, the generic kernel mount
options passed through, and the name of the mount daemon's log in the store."""
from __future__ import annotations

DEFAULT_INTERVAL_MS = 10
#: generic mount(8) options that libfuse hands on to the kernel
KERNEL_MOUNT_OPTIONS = frozenset({"ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec",
                                  "atime", "noatime", "sync", "async", "dirsync"})
#: of those, the flags of one mount rather than of its superblock: a second (bind) mount of a
#: live store takes its own
PER_MOUNT_OPTIONS = KERNEL_MOUNT_OPTIONS - {"sync", "async", "dirsync"}
#: atime options the daemon applies itself: FUSE inodes are S_NOATIME (the kernel stamps no
#: atime, and reads served from its page cache never reach the daemon), and libfuse would
#: hand these to the kernel, which refuses them. "noatime" and "ro" also go to the kernel.
ATIME_MOUNT_OPTIONS = frozenset({"relatime", "norelatime", "strictatime", "nostrictatime",
                                 "diratime", "nodiratime", "lazytime", "nolazytime"})
LOG_NAME = "mount.log"
#: options that undo each other: of two given, the later one holds (mount(8): `-o suid,nosuid`
#: is nosuid). noatime, relatime and strictatime are one choice of how atime is kept.
_OPPOSITES = (("ro", "rw"), ("suid", "nosuid"), ("dev", "nodev"), ("exec", "noexec"), ("sync", "async"),
              ("atime", "noatime"), ("relatime", "norelatime"), ("strictatime", "nostrictatime"),
              ("diratime", "nodiratime"), ("lazytime", "nolazytime"),
              ("noatime", "relatime"), ("noatime", "strictatime"), ("relatime", "strictatime"))
_UNDOES = {option: {b if option == a else a for a, b in _OPPOSITES if option in (a, b)}
           for option in {o for pair in _OPPOSITES for o in pair}}


def last_wins(options) -> list[str]:
    """`options` in their order, less each one that a later option undoes or repeats."""
    kept: list[str] = []
    for option in options:
        undone = _UNDOES.get(option, set()) | {option}
        kept = [o for o in kept if o not in undone] + [option]
    return kept


def atime_policy(options) -> str:
    """How a mount with these options stamps a file's atime when it is read: "noatime"
    (never: noatime, or ro), "strictatime" (at every read), or "relatime" (the default:
    once the atime is older than the mtime or ctime, or a day old)."""
    options = set(last_wins(options))
    if options & {"noatime", "ro"}:
        return "noatime"
    return "strictatime" if "strictatime" in options else "relatime"
