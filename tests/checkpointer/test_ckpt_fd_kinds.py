"""Fds of unusual kinds. O_PATH fds (zdtm symlink): an fd that names a place without opening
it (a symbolic link itself, a device) is reopened by its path with O_PATH; it was refused
as an unknown kind of file. An unlinked one is still refused, with an error naming what it
is. A fd table shared by two processes (zdtm fdt_shared) is refused by name."""
from __future__ import annotations

import os

import pytest

import checkpointer

from ckpt_helpers import ok_lines, reads_back_after_a_restore, restored_goes_on, wait_for


def test_o_path_fds_on_a_symlink_and_a_device_come_back(procs, store, tmp_path):
    out = tmp_path / "paths.out"
    proc = procs.python("path_fds.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to hold its fds")
    checkpointer.checkpoint([proc.pid], store, "paths")
    procs.kill(proc)
    restored_goes_on(procs, store, "paths", out)


def test_an_unlinked_symlink_is_refused_by_name(procs, store, tmp_path):
    out = tmp_path / "paths.out"
    proc = procs.python("path_fds.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 2, "the target to hold its fds")
    os.unlink(tmp_path / "link")
    with pytest.raises(checkpointer.Unsupported, match="an unlinked symbolic link cannot be checkpointed"):
        checkpointer.checkpoint([proc.pid], store, "paths")


def test_a_shared_address_space_is_refused_by_name(procs, store, tmp_path, binaries):
    """Two processes sharing one address space (CLONE_VM without being threads) would come
    back with two: their writes no longer seen by each other. Refused, saying why (it had
    failed on the write tracking's registration: EBUSY)."""
    out = tmp_path / "vm.out"
    proc = procs.start([str(binaries / "shared_vm"), str(out)])
    wait_for(lambda: out.exists() and out.read_text() == "ready\n", "the child to run")
    with pytest.raises(checkpointer.Unsupported, match=r"shares its address space with its parent"):
        checkpointer.checkpoint([proc.pid], store, "vm", tree=True)


def test_a_shared_fd_table_is_refused_by_name(procs, store, tmp_path, binaries):
    """Processes sharing one fd table (clone with CLONE_FILES; zdtm fdt_shared) would come
    back with two: refused, naming them, rather than restored wrong."""
    out = tmp_path / "table.out"
    proc = procs.start([str(binaries / "shared_fd_table"), str(out)])
    wait_for(lambda: out.exists() and ok_lines(out) == ["ready"], "the child to be cloned")
    with pytest.raises(checkpointer.Unsupported, match=r"shares its file descriptor table with its parent"):
        checkpointer.checkpoint([proc.pid], store, "table", tree=True)


def test_seqpacket_pairs_shut_down_for_reading_are_captured(procs, store, tmp_path):
    """A seqpacket socket whose receiving side is shut down reads an empty queue as the end
    of file, not EAGAIN: the capture read it as empty messages for ever (zdtm
    sockets01-seqpacket: the checkpoint hung). Its queued message and the end of file are
    there after a restore."""
    out = tmp_path / "seqpacket.out"
    proc = procs.python("seqpacket_shutdown.py", str(out))
    reads_back_after_a_restore(procs, store, proc, out, "seqpacket", "the target to make its pairs")


def test_a_packet_mode_pipe_keeps_its_packets(store, procs, tmp_path):
    """A pipe written through O_DIRECT holds packets, and each read returns one (stress-ng's
    pipe stressor checks them): a restore must give back every packet with its length,
    not only the first (a read of the pipe's copy returns one packet), and the write end
    must still make packets."""
    out = tmp_path / "packets.out"
    proc = procs.python("packet_pipe.py", str(out))
    reads_back_after_a_restore(procs, store, proc, out, "packets", "the target to fill its pipe")


def test_a_mapping_of_a_socket_is_refused_by_name(procs, store, tmp_path):
    """A mapping of something that has no path (a socket's ring) cannot be made again: the
    checkpoint says so, instead of a restore failing to open 'socket:[...]'."""
    out = tmp_path / "ring.out"
    proc = procs.python("socket_mapping.py", str(out))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 2, "the target to map its ring")
    with pytest.raises(checkpointer.Unsupported, match=r"is of socket:\[\d+\], which cannot be mapped again"):
        checkpointer.checkpoint([proc.pid], store, "ring")


def test_a_pidfd_of_its_own_thread_still_signals_that_thread(procs, store, tmp_path, binaries):
    """A pidfd of one of the process's threads (PIDFD_THREAD, zdtm pidfd_of_thread) names that
    thread again after a restore: pidfd_send_signal(PIDFD_SIGNAL_THREAD) through it reaches
    that thread (the target checks). Its restore failed: the thread did not exist yet when
    the fds were made."""
    out = tmp_path / "thread_pidfd.out"
    proc = procs.start([str(binaries / "thread_pidfd"), str(out)])
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 10, "the target to signal its thread")
    checkpointer.checkpoint([proc.pid], store, "pidfd")
    procs.kill(proc)
    restored_goes_on(procs, store, "pidfd", out)
