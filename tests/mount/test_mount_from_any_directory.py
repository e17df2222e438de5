"""`sls mount` works from whatever directory the user is in: the daemon it starts must not
import the user's own modules in place of its own (or of the standard library's)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mount_helpers import Mount, is_mounted, sls

SLS = Path(sys.executable).parent / "sls"


def test_a_mount_from_a_project_with_its_own_mount_package_serves_the_store(workdir):
    project = workdir / "project"
    (project / "mount").mkdir(parents=True)
    (project / "mount" / "__init__.py").write_text('raise ImportError("the project\'s own mount package")\n')
    m = Mount(workdir / "m")
    sls("init", m.store)
    try:
        result = subprocess.run([str(SLS), "mount", str(m.store), str(m.path)], cwd=project,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert is_mounted(m.path)
        (m.path / "f").write_text("served")
        m.pid = m.status()["pid"]
        m.umount()
    finally:
        m.cleanup()
