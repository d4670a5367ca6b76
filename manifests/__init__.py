"""Worker manifests: a project directory → a resolved :class:`WorkerSpec` (SPEC §3–§4).

Pure: reads the project's files, imports none of our other packages.

>>> spec = load_worker(Path("examples/python-worker"))  # doctest: +SKIP
>>> spec.kind, spec.scripts.install  # doctest: +SKIP
('python', 'pip install -r requirements.txt')
"""

from __future__ import annotations

from manifests.errors import ManifestError
from manifests.loader import load_worker
from manifests.spec import (
    DEFAULT_BASE_IMAGES,
    KINDS,
    MANIFEST_FILENAME,
    PACKAGE_MANAGERS,
    RESERVED_ENV_KEYS,
    Resources,
    Scripts,
    WorkerSpec,
    validate_worker_name,
)

__all__ = [
    "DEFAULT_BASE_IMAGES",
    "KINDS",
    "MANIFEST_FILENAME",
    "PACKAGE_MANAGERS",
    "RESERVED_ENV_KEYS",
    "ManifestError",
    "Resources",
    "Scripts",
    "WorkerSpec",
    "load_worker",
    "validate_worker_name",
]
