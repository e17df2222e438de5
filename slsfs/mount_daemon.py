"""The daemon of `sls mount` (a plain mount, no group running): mount.daemon with what
slsfs keeps in a store's history. A store holds the records of persistence groups long
after they stopped; the records name their files commits by id, which the mount's own
retention and GC cannot see, so they keep what slsfs.group_retention.needed names
(without it, a plain mount thinned a stopped group's files commit away and `sls restore
GROUP --clone` answered "checkpoint N does not exist"). Importing group_retention also
makes every `sls fsck` this daemon answers check those links.

Run as `python -m slsfs.mount_daemon` with mount.daemon's arguments."""
from __future__ import annotations

import sys

from mount import daemon

from . import group_retention


def main(argv: list[str] | None = None) -> int:
    return daemon.main(argv, also_keep=group_retention.needed)


if __name__ == "__main__":
    sys.exit(main())
