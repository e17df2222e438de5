"""Linux native AIO contexts (io_setup(2); libaio, as databases use it): kept and made again.

What: `ring_record(pid, vma)` reads, while the process is frozen, the ring of an AIO
context (the "/[aio]" mapping io_setup made; the context id a program holds is the ring's
address): its size, the kernel's index of it, head, tail, and the completion events not
reaped yet (those between head and tail). `recreate(inj, vmas)` makes every context again in
a restored process: io_setup of a size that gives a ring of the same size, the kernel's tail
moved to the recorded one by completed writes to /dev/null (the ring's tail is the kernel's
own count: it cannot be written), the recorded head and events written, and the ring moved
to its old address with mremap (the kernel follows: the old id works). Other contexts are
made and dropped in between where needed so that each gets its recorded index (the kernel
looks a context up by the index in its ring's header). A process that has an AIO context and
a file open with O_DIRECT is refused (checked only for a process with a context: nothing is
added to the checkpoints of the others).
Why: a program keeps using its io_context_t after a restore (io_submit, io_getevents, and
reading the ring directly, as libaio's io_getevents does), and finds the events it had not
reaped yet.

Simplifications: the kernel does not show the requests still in flight in a context (a
submitted read or write not completed). Buffered I/O on a regular file completes inside
io_submit, so none are in flight; direct I/O (O_DIRECT: InnoDB's data files) can be, and
would never complete after a restore, so a process with both is refused at checkpoint; a
poll request (IOCB_CMD_POLL) waiting at the checkpoint is lost. The ring's size must come out
the same at restore (io_setup sizes it by the number of CPUs): else the restore fails, saying so.
"""
from __future__ import annotations

import os
import struct

from . import procfs
from .errors import CheckpointError, Unsupported
from .inject import Injector
from .kernel import NR

NR_IO_SETUP, NR_IO_DESTROY, NR_IO_SUBMIT = 206, 207, 209
AIO_RING_MAGIC = 0xA10A10A1
# struct aio_ring: id, nr, head, tail, magic, compat_features, incompat_features, header_length
HEADER = struct.Struct("<8I")
HEAD_AT = 8
EVENT_SIZE = 32             # struct io_event: data, obj, res, res2
# struct iocb: data, key, rw_flags, opcode, reqprio, fildes, buf, nbytes, offset, reserved2, flags, resfd
IOCB = struct.Struct("<QIIHhIQQqQII")
IOCB_CMD_PWRITE = 1
O_WRONLY, O_DIRECT = 0o1, 0o40000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
AT_FDCWD = -100
SUBMIT_BATCH = 256          # iocb pointers put in the scratch area per io_submit


def is_ring(vma: procfs.Vma) -> bool:
    """Whether this mapping is the ring of an AIO context."""
    return vma.path.startswith("/[aio]")


def ring_record(pid: int, vma: procfs.Vma) -> dict:
    """The image record of the AIO context whose ring `vma` is (the process frozen)."""
    _refuse_direct_io(pid)
    what = f"process {pid}, AIO context {vma.start:#x}"
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            header = HEADER.unpack(os.pread(mem.fileno(), HEADER.size, vma.start))
            ring_id, nr, head, tail, magic, _, incompat, header_length = header
            if magic != AIO_RING_MAGIC or header_length != HEADER.size or incompat or head >= nr or tail >= nr \
                    or HEADER.size + nr * EVENT_SIZE > vma.end - vma.start:
                raise Unsupported(f"{what}: its ring's header is not one this kernel writes (magic {magic:#x}, "
                                  f"{nr} events, head {head}, tail {tail}): cannot checkpoint it")
            events = b"".join(os.pread(mem.fileno(), EVENT_SIZE, vma.start + HEADER.size + i * EVENT_SIZE)
                              for i in _indices(head, tail, nr))
    except OSError as exc:
        raise CheckpointError(f"{what}: its ring cannot be read ({exc.strerror})") from exc
    return {"id": ring_id, "nr": nr, "head": head, "tail": tail, "events": events.hex()}


def _refuse_direct_io(pid: int) -> None:
    """Refuse a process (that has an AIO context) with a file open with O_DIRECT: its
    requests may be in flight, which the kernel does not show."""
    if direct := [info for info in procfs.fds(pid) if info.flags & O_DIRECT]:
        raise Unsupported(f"process {pid} has an AIO context (io_setup) and {direct[0].target} open with "
                          "O_DIRECT: direct I/O submitted and not yet completed cannot be seen, so it would be "
                          "lost; turn native AIO off in the program (InnoDB: innodb_use_native_aio=0)")


def recreate(inj: Injector, vmas: list[dict]) -> None:
    """Make again, in the restored process of `inj`, the AIO context of every "aio" mapping
    of `vmas` at its address (nothing may be mapped there but what mremap may replace)."""
    rings = sorted((v for v in vmas if v["kind"] == "aio"), key=lambda v: v["aio"]["id"])
    if not rings:
        return
    spare: list[int] = []           # contexts made only to give the next one its index
    for vma in rings:
        record = vma["aio"]
        while True:
            ctx = _setup(inj, (record["nr"] - 2) // 2, vma)
            ring_id, nr = HEADER.unpack(inj.read(ctx, HEADER.size))[:2]
            if ring_id >= record["id"]:
                break
            spare.append(ctx)
        if ring_id != record["id"] or nr != record["nr"]:
            raise CheckpointError(f"the AIO context at {vma['start']:#x} could not be made again as it was "
                                  f"(index {ring_id}, {nr} events instead of {record['id']}, {record['nr']}: "
                                  "restore on a machine with the same number of CPUs)")
        _move_tail(inj, ctx, record)
        events = bytes.fromhex(record["events"])
        for at, i in enumerate(_indices(record["head"], record["tail"], nr)):
            inj.write(ctx + HEADER.size + i * EVENT_SIZE, events[at * EVENT_SIZE:(at + 1) * EVENT_SIZE])
        size = vma["end"] - vma["start"]
        inj.check(NR["mremap"], ctx, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, vma["start"],
                  what=f"mremap of the AIO context to {vma['start']:#x}")
    for ctx in spare:
        inj.check(NR_IO_DESTROY, ctx, what="io_destroy (a spare AIO context)")


def _indices(head: int, tail: int, nr: int) -> list[int]:
    """The ring slots from head up to (not including) tail."""
    return [(head + k) % nr for k in range((tail - head) % nr)]


def _setup(inj: Injector, nr_events: int, vma: dict) -> int:
    """io_setup(nr_events) in the process; the new context's id (its ring's address)."""
    out = inj.put(bytes(8))
    inj.check(NR_IO_SETUP, nr_events, out, what=f"io_setup({nr_events}) for the AIO context at {vma['start']:#x}")
    return struct.unpack("<Q", inj.read(out, 8))[0]


def _move_tail(inj: Injector, ctx: int, record: dict) -> None:
    """Bring the kernel's tail of a fresh context to the recorded one (and its head with
    it): writes of one byte to /dev/null, each completed at once, reaped by moving head
    (as io_getevents would) so that the ring never fills. A tail behind its head takes a
    whole turn first, or the kernel's count of completed events would be wrong."""
    head, tail, nr = record["head"], record["tail"], record["nr"]
    count = tail if tail >= head else nr + tail
    if not count:
        return
    fd = inj.check(NR["openat"], AT_FDCWD, inj.put(b"/dev/null\0"), O_WRONLY, 0, what="open /dev/null (AIO)")
    byte = inj.scratch + 16
    iocb = inj.put(IOCB.pack(0, 0, 0, IOCB_CMD_PWRITE, 0, fd, byte, 1, 0, 0, 0, 0), 64)
    batch = min(nr - 1, SUBMIT_BATCH)
    pointers = inj.put(struct.pack(f"<{batch}Q", *[iocb] * batch), 128)
    done = 0
    while done < count:
        submitted = inj.check(NR_IO_SUBMIT, ctx, min(count - done, batch), pointers,
                              what="io_submit (moving a restored AIO context's tail)")
        if submitted <= 0:
            raise CheckpointError("io_submit took no request while a restored AIO context's tail was moved")
        done += submitted
        inj.write(ctx + HEAD_AT, struct.pack("<I", min(done, head)))
    inj.check(NR["close"], fd, what="close /dev/null (AIO)")

