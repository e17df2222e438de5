"""name_to_handle_at(2) and open_by_handle_at(2) for the tests of export support (a handle
outlives the kernel's inode: the daemon is asked for "." and ".." in it)."""
from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100


def file_handle(path) -> ctypes.Array:
    """name_to_handle_at(2): struct file_handle with room for 128 bytes of handle."""
    handle = ctypes.create_string_buffer(8 + 128)
    handle[0:4] = (128).to_bytes(4, "little")
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), handle, ctypes.byref(mount_id), 0) != 0:
        raise OSError(ctypes.get_errno(), "name_to_handle_at")
    return handle


def open_by_handle(mountpoint, handle) -> int:
    """open_by_handle_at(2) of `handle` on the mount at `mountpoint`, read-only: a descriptor."""
    mount_fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = libc.open_by_handle_at(mount_fd, handle, os.O_RDONLY)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return fd
    finally:
        os.close(mount_fd)
