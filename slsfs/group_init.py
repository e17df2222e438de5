"""The init process of `sls run --init` groups (slsfs/sls_init.c), built on first use.

A group's first process is PID 1 of its PID namespace, and when PID 1 ends the kernel
kills the rest: a program that daemonizes ends its own group. With `--init`, PID 1 is
sls-init, which runs the command as its child and stays until every process of the
namespace has ended (see the C source for its contract).

The binary is compiled with the system gcc, statically (it maps no shared library, so
a libc upgrade on the host leaves it alone), into INIT_DIR, named by a digest of its source and build
command. Process images record the path of a program they map, so a binary is never
rewritten in place: a restore maps the bytes the checkpoint saw, and a changed source
gets a new name. Simplification: an image taken with an older sls-init can only be
restored where that binary is still present (a store received from another machine
needs the same slsfs version there, which builds the same name).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import xxhash

from .groups import GroupError

SOURCE = Path(__file__).with_name("sls_init.c")
INIT_DIR = Path(os.environ.get("SLSFS_STATE_DIR", "/var/lib/slsfs"))
BUILD = ["gcc", "-O2", "-static"]


def path() -> str:
    """The binary for the current source (built only by `ensure_built`)."""
    digest = xxhash.xxh64(SOURCE.read_bytes() + repr(BUILD).encode()).hexdigest()
    return str(INIT_DIR / f"sls-init-{digest}")


def ensure_built() -> str:
    """The path of sls-init, compiling it first if this version is not built yet."""
    target = path()
    if os.access(target, os.X_OK):
        return target
    try:
        INIT_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as e:
        raise GroupError(f"cannot create {INIT_DIR} for sls-init ({e.strerror}); set SLSFS_STATE_DIR "
                         "to a writable directory") from None
    fd, partial = tempfile.mkstemp(dir=INIT_DIR, prefix=".sls-init-")
    os.close(fd)
    try:
        result = subprocess.run([*BUILD, "-o", partial, str(SOURCE)], capture_output=True, text=True)
    except FileNotFoundError:
        os.unlink(partial)
        raise GroupError("--init needs gcc to build sls-init: apt-get install gcc libc6-dev") from None
    if result.returncode != 0:
        os.unlink(partial)
        last = (result.stderr.strip().splitlines() or [f"status {result.returncode}"])[-1]
        raise GroupError(f"building sls-init failed ({last}): apt-get install gcc libc6-dev")
    os.chmod(partial, 0o755)
    os.replace(partial, target)          # atomic: a concurrent build writes the same bytes
    return target
