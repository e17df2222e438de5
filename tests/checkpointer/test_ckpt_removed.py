"""Files gone from under a running process: its working directory removed, its
executable replaced by an upgrade or deleted, the directory of a file it keeps open removed. The checkpoint keeps the program's mapped
contents; the restored process runs the same code, with /proc/PID/exe on that copy and
a working directory that is removed again (as before the checkpoint)."""
from __future__ import annotations

import os
import shutil

import pytest

import checkpointer

from ckpt_helpers import assert_unbroken, ok_lines, reads_after_a_restore, restored_goes_on, wait_for

LINE = 20


@pytest.mark.parametrize("executable", ["replaced", "deleted"])
def test_a_process_whose_cwd_and_executable_are_gone_comes_back(procs, store, binaries, tmp_path, executable):
    program, workdir, out = tmp_path / "counter", tmp_path / "work", tmp_path / "counter.out"
    shutil.copy(binaries / "counter", program)
    workdir.mkdir()
    proc = procs.start([str(program), str(out)], cwd=workdir)
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "the counter to count")
    workdir.rmdir()
    program.unlink()
    if executable == "replaced":   # an upgrade: another program at the same path
        shutil.copy("/bin/true", program)
    checkpointer.checkpoint([proc.pid], store, "gone", tree=True)
    procs.kill(proc)
    size = out.stat().st_size
    restored = checkpointer.restore(store, "gone")
    procs.restored.append(restored)
    wait_for(lambda: out.stat().st_size >= size + 100 * LINE, "the restored counter to count")
    assert assert_unbroken(out, proc.pid) > size // LINE + 90
    [pid] = restored.pids
    assert os.readlink(f"/proc/{pid}/exe").endswith("counter (deleted)")
    assert os.readlink(f"/proc/{pid}/cwd").endswith(" (deleted)")
    assert sorted(os.listdir(tmp_path)) == sorted(["counter.out", "store"] + ["counter"] * (executable == "replaced"))


def test_a_file_unlinked_under_one_name_but_linked_under_another_is_written_after_a_restore(procs, store, tmp_path):
    """An fd whose name was unlinked while the file keeps another name (link(), unlink():
    zdtm unlink_fstat03) is the same file after a restore: what the process writes then
    reaches the other name, instead of an unlinked copy nobody can read."""
    out, data = tmp_path / "linked.out", tmp_path / "data"
    proc = procs.python("linked_writer.py", str(out), str(data))
    wait_for(lambda: out.exists() and len(ok_lines(out)) >= 20, "the target to write")
    checkpointer.checkpoint([proc.pid], store, "linked")
    procs.kill(proc)
    written = len(ok_lines(out))
    restored_goes_on(procs, store, "linked", out)
    numbers = [int(n) for n in ok_lines(tmp_path / "data.link")]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > written + 5, \
        "what the restored process wrote did not reach the file's other name"


@pytest.mark.parametrize("target", ["removed_tmpdir.py", "unlinked_device.py", "unlinked_named.py"],
                         ids=["directory", "device", "name"])
def test_an_open_file_whose_name_is_gone_for_good_comes_back(procs, store, tmp_path, target):
    """directory: an unlinked file whose directory was removed too (zdtm unlink_regular00; a
    temporary directory cleaned up while a file in it is still in use): the restore failed
    ('cannot make the unlinked file again in ...: No such file or directory'); it is made in
    the nearest directory that exists, with its contents and offset.
    device: a /dev/null-like node the program made, opened and unlinked (zdtm deleted_dev):
    the restore tried to reopen it by its path and failed ('No such file or directory'); it
    is made again with its mode and device number, opened, and unlinked.
    name: an unlinked file whose directory is still there: it was made with O_TMPFILE, which
    /proc/PID/fd names "<directory>/#<inode> (deleted)" (zdtm unlink_multiple_largefiles:
    'Symlink target ... has changed'); it is made under its own name and unlinked at once."""
    out = tmp_path / "gone.out"
    proc = procs.python(target, str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the target to lose its file's name")
    checkpointer.checkpoint([proc.pid], store, "gone")
    procs.kill(proc)
    reads_after_a_restore(procs, store, "gone", out)
