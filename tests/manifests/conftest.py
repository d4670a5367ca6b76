from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

ProjectFactory = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """Write a project directory: ``make_project({"package.json": "{}"}, manifest="name: x")``.

    File values may be ``str`` or ``bytes``; ``manifest`` is written as ``iii.worker.yaml``.
    """
    counter = iter(range(1_000_000))

    def make(
        files: dict[str, str | bytes] | None = None,
        *,
        manifest: str | bytes | None = None,
        dirname: str | None = None,
    ) -> Path:
        project = tmp_path / (dirname or f"project{next(counter)}")
        project.mkdir(parents=True)
        everything = dict(files or {})
        if manifest is not None:
            everything["iii.worker.yaml"] = manifest
        for relative, content in everything.items():
            path = project / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return project

    return make
