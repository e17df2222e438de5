"""mount.device_number: a mount made on the anonymous device number it asks for, when that
number falls free within FREE_WAIT_S (a stale mount's superblock outlives its last mount a
moment, kept by the mount namespaces of its dying processes)."""
from __future__ import annotations

import os
import threading

from mount.device_number import _superblock, taking


def _number(fd: int) -> int:
    return os.minor(os.fstat(fd).st_dev)


def test_a_number_freed_a_moment_later_is_still_the_one_the_mount_gets():
    stale = _superblock()                       # holds the number we will ask for
    wanted = _number(stale)
    releaser = threading.Timer(0.05, os.close, args=(stale,))     # (within FREE_WAIT_S)
    releaser.start()
    try:
        with taking(wanted):
            mounted = _superblock()             # (what the mount would be: the next superblock made)
            try:
                got = _number(mounted)
            finally:
                os.close(mounted)
    finally:
        releaser.join()
    assert got == wanted


def test_a_number_that_stays_taken_is_given_up_after_a_while():
    other = _superblock()
    try:
        with taking(_number(other)):
            mounted = _superblock()
            try:
                assert _number(mounted) != _number(other)
            finally:
                os.close(mounted)
    finally:
        os.close(other)
