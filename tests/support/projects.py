"""Worker projects for daemon tests: a manifest whose scripts are shell, on a given base image."""

from __future__ import annotations

import json
from pathlib import Path


def make_shell_project(root: Path, image: str, name: str, *, start: str, install: str = "",
                       setup: str = "", extra: str = "") -> Path:
    """``root/name`` with an ``iii.worker.yaml`` running ``start`` under ``/bin/sh`` (kind python,
    so an empty ``requirements.txt`` makes it detectable; ``install`` empty = skipped)."""
    project = root / name
    project.mkdir()
    (project / "requirements.txt").write_text("")
    (project / "iii.worker.yaml").write_text(
        f"name: {name}\nruntime:\n  kind: python\n  base_image: {image}\n"
        f"scripts:\n  setup: {json.dumps(setup)}\n  install: {json.dumps(install)}\n"
        f"  start: {json.dumps(start)}\n{extra}")
    return project
