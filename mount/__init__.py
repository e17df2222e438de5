"""mount: the slsfs FUSE file system (pyfuse3 on trio) over one object store.

Standalone use is `sls mount STORE MNT` (the daemon is `mount/daemon.py`). Modules,
from the bottom up: `schema` (keys and records in a volume tree), `volume` (POSIX
objects of one volume), `history` (the virtual `.sls/` tree), `views` (kernel inode
numbers across the live volume, clones, `.sls` and old trees), `operations` (the
pyfuse3 handlers), `filesystem` (checkpoints, durability, snapshots, clones),
`control` (how `sls` reaches a running daemon), `daemon`.

In-process API (for the persistence-group daemon of issue 5)
-------------------------------------------------------------

    from objectstore import Store
    from mount import FileSystem

    store = Store.open(path)                       # the daemon owns the store (single thread)
    fs = FileSystem(store, "main", checkpoint_interval_ms=None)   # None: you decide when to commit
    async with trio.open_nursery() as nursery:
        await nursery.start(fs.serve, mountpoint)  # returns once the mount is live
                                                   # (serve(..., mount_options=["noexec"]) for
                                                   # generic kernel options, see KERNEL_MOUNT_OPTIONS)
        nursery.start_soon(mount.daemon.serve_control, fs)   # optional: `sls snapshot/clone/...`
        ...
        # one checkpoint, with the group's processes frozen:
        await fs.drain_kernel_cache(mountpoint)    # syncfs in a worker thread: the kernel's dirty
                                                   # pages of shared mmaps reach the daemon
        #   or instead: await fs.sync_kernel_cache()  (the same through the syncfs helper
        #   process: no daemon thread sleeps in the syncfs, so a SIGKILLed daemon can always
        #   exit; the way with the writeback cache on; from another thread:
        #   trio.from_thread.run(fs.sync_kernel_cache, trio_token=token))
        fs.seal()                                  # buffered writes + inode changes -> volume trees
        store.set_root("procs/...", image_root)    # your process images
        commit = store.commit(label, durable=False)   # holds exactly the sealed file state
        fs.mark_committed()
        # ...thaw; later store.barrier() for durability
        # or, in one call: fs.checkpoint(label, durable=False, roots={"procs/...": image_root})

    fs.history.extensions["procs"] = provider      # .sls/checkpoints/<id>/procs/: provider(commit)
                                                   # -> mount.history.VNode (VDir/VFile/VLink) or None
    await fs.flush_kernel_writes()                 # before cancelling serve(): the kernel's
                                                   # writeback cache (on by default) holds
                                                   # writes of files still open
    fs.close()                                     # after serve() returned: final durable checkpoint

Rules: call everything from the trio thread that runs `fs.serve` (the Store is not
thread-safe; `seal()` and `checkpoint()` are synchronous and never await, so they are
atomic with respect to FUSE requests). Never call syncfs on the mount from that thread
(it waits for requests that thread must answer): use `drain_kernel_cache`. Never touch
files of the mount from the daemon's own process while holding the GIL (an mmap of a
file in the mount, accessed from Python, deadlocks on its page fault): do file I/O on
the mount from child processes, or from worker threads with plain read/write calls. fsync from
applications calls `fs.make_durable(volume, ino)`, which seals and commits durably on its own
(the kernel sends the file's cached pages first); with `FileSystem(..., fsync_commits=False)`
it commits nothing, for a daemon whose restores never go past its own checkpoints.
`FileSystem(..., writeback_cache=False)`
turns the kernel's writeback cache off: every write() then reaches the daemon at once.
The open-refcount holder used for unlinked-but-open inodes is `operations.HOLDER`;
a daemon that restores processes holding such files adds its own holder names.
"""
__all__ = ["FileSystem", "MountError", "ensure_volume"]


def __getattr__(name: str):
    """The API loads FUSE on first use, so that `mount.control` and `mount.options`
    stay cheap to import for the command line."""
    if name in __all__:
        from . import filesystem
        return getattr(filesystem, name)
    raise AttributeError(f"module 'mount' has no attribute {name!r}")
