"""An 8-byte word of shared memory that one process writes while another reads it.

struct.pack_into zero-fills its bytes before it writes them, so a process reading while
another stores can see 0 or half a value: a torn read that looks exactly like memory a
restore lost. A ctypes c_uint64 at an aligned offset is read and written as one 8-byte
load or store."""
import ctypes


def word(buffer, offset: int) -> ctypes.c_uint64:
    """The aligned 8-byte word at `offset` of a writable buffer (an mmap)."""
    if offset % 8:
        raise ValueError(f"offset {offset} is not 8-byte aligned")
    return ctypes.c_uint64.from_buffer(buffer, offset)
