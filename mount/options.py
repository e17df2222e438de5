"""What a mount can be asked for, in a module light enough for the `sls` command line to
import without loading FUSE: the default checkpoint interval, the generic kernel mount
options passed through, and the name of the mount daemon's log in the store."""
from __future__ import annotations

DEFAULT_INTERVAL_MS = 10
#: generic mount(8) options that libfuse hands on to the kernel
KERNEL_MOUNT_OPTIONS = frozenset({"ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec",
                                  "atime", "noatime", "sync", "async", "dirsync"})
LOG_NAME = "mount.log"
