"""`.sls/checkpoints/<id>/procs/<pid>/`: the processes of a checkpoint, as files.

For each persistence group named in the checkpoint (its newest group checkpoint at or
before that commit), each process appears under its own PID (`<pid>@<group>` when two
groups share a PID) with:

    maps          the mappings, in the format of /proc/PID/maps
    status.json   ids, credentials, cwd/exe, threads (registers, signal mask, pending
                  signals, alt stack), signal handlers, fds, limits -- as captured
    fds/<n>       one symlink per open file descriptor, to what it was open on
    core          an ELF core file (slsfs.elfcore): `gdb PROGRAM core` shows the
                  backtrace and variables at the checkpoint's instant

Everything is built on demand from the image in the store, in the daemon's trio thread
(the mount calls providers from its FUSE handlers). A process's directory and files
belong to its real uid and gid and are private to them (0500/0400): they hold its
memory, and so its secrets.
"""
from __future__ import annotations

import io
import json
from typing import Callable

from objectstore import Store

from checkpointer.image import StoredImage
from checkpointer.kernel import Regs
from mount.history import VDir, VFile, VLink, VNode

from . import groups
from .elfcore import CoreMapping, CoreProcess, CoreThread, write_core

PAGE = 4096


def provider(store: Store) -> Callable[[object], VNode | None]:
    """The `procs` extension of the mount's history tree for `store`."""
    def procs(commit) -> VNode | None:
        entries: dict[str, VNode] = {}
        for name in groups.group_names(commit.roots):
            record = groups.load(store, name, commit.roots)
            image = StoredImage(store, record.image)
            for meta in image.processes:
                if meta.get("zombie"):
                    continue
                key = str(meta["pid"]) if str(meta["pid"]) not in entries else f"{meta['pid']}@{name}"
                entries[key] = _process_dir(image, meta, record)
        return VDir(lambda: entries) if entries else None
    return procs


def _process_dir(image: StoredImage, meta: dict, record: groups.GroupCheckpoint) -> VDir:
    files = {f["id"]: f for f in image.files}
    fds = {str(fd["fd"]): VLink(_fd_target(files.get(fd["file"], {}))) for fd in meta["fds"]}
    owner = (meta["creds"]["uid"][0], meta["creds"]["gid"][0])
    listing = {
        "maps": VFile(lambda: _maps(meta).encode(), owner),
        "status.json": VFile(lambda: json.dumps(_status(meta, record, files), indent=2).encode() + b"\n",
                             owner),
        "fds": VDir(lambda: fds, owner),
        "core": VFile(lambda: core_bytes(image, meta), owner),
    }
    return VDir(lambda: listing, owner)


def _fd_target(file: dict) -> str:
    if "path" in file:
        return file["path"]
    kind = file.get("kind", "unknown")
    return f"pipe:[{file['pipe']}]" if kind == "pipe" else f"{kind}:[{file.get('id', '?')}]"


def _maps(meta: dict) -> str:
    lines = []
    for v in meta["vmas"]:
        perms = v["prot"] + ("s" if v["shared"] else "p")
        path = v["path"]
        lines.append(f"{v['start']:012x}-{v['end']:012x} {perms} {v['offset']:08x} 00:00 0"
                     + (f"    {path}" if path else ""))
    return "\n".join(lines) + "\n"


def _status(meta: dict, record: groups.GroupCheckpoint, files: dict) -> dict:
    skip = {"vmas", "auxv", "threads", "fds"}
    doc = {k: v for k, v in meta.items() if k not in skip}
    doc["group"] = {"name": record.settings.name, "checkpoint_seq": record.seq, "time": record.time}
    doc["threads"] = [{k: v for k, v in t.items() if k != "xstate"} for t in meta["threads"]]
    doc["fds"] = [{**fd, "file": files.get(fd["file"], {})} for fd in meta["fds"]]
    for fd in doc["fds"]:
        fd["file"] = {k: v for k, v in fd["file"].items() if k not in ("data", "contents")}
    return doc


def core_bytes(image: StoredImage, meta: dict) -> bytes:
    """The ELF core of one process of `image`."""
    pages: dict[int, bytes] = {}
    for addr, data in image.page_runs(meta["pid"]):
        for off in range(0, len(data), PAGE):
            pages[addr + off] = data[off:off + PAGE]
    threads = [CoreThread(tid=t["tid"], regs=bytes(Regs.from_dict(t["regs"])),
                          fpregs=bytes.fromhex(t["xstate"])[:512], sighold=t["sigmask"])
               for t in meta["threads"]]
    mappings = [CoreMapping(v["start"], v["end"], v["prot"] + ("s" if v["shared"] else "p"), v["offset"],
                            v["path"] if v["kind"] == "file" else "")
                for v in meta["vmas"] if v["kind"] not in ("vvar", "vvar_vclock")]
    proc = CoreProcess(pid=meta["pid"], ppid=meta.get("ppid", 0), pgid=meta["pgid"], sid=meta["sid"],
                       uid=meta["creds"]["uid"][0], gid=meta["creds"]["gid"][0], comm=meta["comm"],
                       args=meta["comm"], threads=threads, mappings=mappings,
                       auxv=bytes.fromhex(meta["auxv"]))
    out = io.BytesIO()
    write_core(out, proc, pages.get)
    return out.getvalue()
