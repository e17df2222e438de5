"""Removed directories (zdtm cwd01, cwd02, rmdir_open): a working directory removed while
a process works in it comes back removed under the same name, and one the process also
holds open (whose parent is gone too) is the very directory of its fd again."""
from __future__ import annotations

import checkpointer

from ckpt_helpers import children_of, ok_lines, reads_after_a_restore, wait_for


def test_removed_working_directories_keep_their_name_and_their_open_fd(procs, store, tmp_path, subreaper):
    out = tmp_path / "cwd.out"
    proc = procs.python("removed_cwd.py", str(out), str(tmp_path))
    wait_for(lambda: out.exists() and len([l for l in ok_lines(out) if l.endswith("ok")]) >= 20,
             "both processes to work in their removed directories")
    [child] = children_of(proc.pid)
    checkpointer.checkpoint([proc.pid], store, "cwd", tree=True)
    procs.kill(proc)
    subreaper([child])
    restored = checkpointer.restore(store, "cwd")
    procs.restored.append(restored)
    size = out.stat().st_size

    def writers_since() -> set[str]:
        lines = out.read_bytes()[size:].decode(errors="replace").split("\n")[1:-1]
        return {line.split()[1] for line in lines if line.endswith(" ok")}
    wait_for(lambda: len(writers_since()) == 2, "both restored processes to go on")
    bad = [line for line in ok_lines(out) if "BAD" in line]
    assert not bad, f"the targets reported: {bad[:3]}"
    assert not (tmp_path / "up").exists() and not (tmp_path / "gone").exists()


def test_a_working_directory_in_proc_of_an_ended_process_stays_removed(procs, store, tmp_path):
    """/proc/PID of a process that has ended cannot be made again for the restore: the
    working directory is then a removed directory made elsewhere (it was "/", where
    getcwd succeeds and files can be made: zdtm unhashed_proc)."""
    out = tmp_path / "proc_cwd.out"
    proc = procs.python("proc_cwd.py", str(out))
    wait_for(lambda: out.exists() and ok_lines(out)[:1] == ["ready"], "the target to work in /proc/CHILD")
    checkpointer.checkpoint([proc.pid], store, "proc_cwd")
    procs.kill(proc)
    restored = reads_after_a_restore(procs, store, "proc_cwd", out)
    assert any("working directory /proc/" in warning for warning in restored.warnings), restored.warnings
