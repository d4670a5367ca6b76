"""The export layer cache: reused only while nothing in the upper dir changed."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.export.service import cached_layer
from daemon.export.upper import read_upper
from daemon.sandboxes.layout import SandboxLayout


def test_unchanged_upper_reuses_the_layer_and_any_change_rebuilds_it(tmp_path: Path) -> None:
    layout = SandboxLayout(tmp_path, "w")
    (layout.upper / "workspace").mkdir(parents=True)
    app = layout.upper / "workspace/app.py"
    app.write_text("print(1)\n")
    first = cached_layer(layout, read_upper(layout.upper))
    built_at = first.path.stat().st_mtime_ns
    again = cached_layer(layout, read_upper(layout.upper))
    assert again == first and again.path.stat().st_mtime_ns == built_at  # not rewritten

    # same size, mtime put back: only the ctime tells, and it must be enough
    st = app.stat()
    app.write_text("print(2)\n")
    os.utime(app, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = cached_layer(layout, read_upper(layout.upper))
    assert changed.digest != first.digest
