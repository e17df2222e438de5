"""docs/FORMAT.md's table of formats names each format's current version as the code that
reads it checks it (the table said 3 for group records at version 4, and 28 for images at
29: a reader of the document was told the wrong version)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

FORMAT_MD = Path(__file__).parents[2] / "docs" / "FORMAT.md"


def test_every_version_in_the_table_is_the_codes():
    rows = re.findall(r"^\| ([^|]+) \| (\d+)[^|]* \| `([\w/]+)\.py` \(`(\w+)`", FORMAT_MD.read_text(), re.M)
    assert len(rows) >= 13, rows
    for name, version, module, constant in rows:
        value = getattr(importlib.import_module(module.replace("/", ".")), constant)
        assert value == int(version), f"FORMAT.md says {name} is version {version}; {module}.{constant} is {value}"
