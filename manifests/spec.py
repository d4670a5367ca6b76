"""The resolved worker spec (SPEC §3–§4) and the rules every field obeys."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from manifests.describe import describe
from manifests.errors import ManifestError

MANIFEST_FILENAME = "iii.worker.yaml"
MAX_MANIFEST_BYTES = 64 * 1024

Kind = Literal["typescript", "javascript", "bun", "python", "rust"]
PackageManager = Literal["npm", "yarn", "pnpm", "bun"]

KINDS: tuple[str, ...] = ("typescript", "javascript", "bun", "python", "rust")
NODE_KINDS: tuple[str, ...] = ("typescript", "javascript")
PACKAGE_MANAGERS: tuple[str, ...] = ("npm", "yarn", "pnpm", "bun")
DEFAULT_KIND = "typescript"
DEFAULT_PACKAGE_MANAGER = "npm"

DEFAULT_BASE_IMAGES: dict[str, str] = {
    "node": "docker.io/iiidev/node:latest",
    "bun": "docker.io/oven/bun:latest",
    "python": "docker.io/iiidev/python:latest",
    "rust": "docker.io/library/rust:slim-bookworm",
}

MEMORY_MIB_RANGE = (128, 65536)
CPUS_RANGE = (1, 64)
DEFAULT_MEMORY_MIB = 2048
DEFAULT_CPUS = 2

# The env keys the system sets inside every sandbox (SPEC §8); a manifest may not override them.
RESERVED_ENV_KEYS: tuple[str, ...] = ("III_URL", "III_ENGINE_URL", "III_WORKER_NAME", "III_ISOLATION")

NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_NAME_RE = re.compile(NAME_PATTERN)  # fullmatch: "$" would accept a trailing newline


class Scripts(msgspec.Struct, frozen=True, kw_only=True):
    """Shell commands run under ``/bin/sh -c`` in ``/workspace``; ``""`` means nothing to run."""

    setup: str
    install: str
    start: str


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """Sandbox size: ``memory`` in MiB (128..65536), ``cpus`` (1..64)."""

    memory: int = DEFAULT_MEMORY_MIB
    cpus: int = DEFAULT_CPUS


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A project resolved into everything needed to run it in a sandbox.

    ``package_manager`` is ``None`` for python and rust; ``entry`` is ``None`` unless the manifest
    sets ``runtime.entry``; ``base_image`` is canonical (``docker.io/library/python:latest``).
    ``warnings`` are one-line, human-readable notes (deprecations, ignored keys).
    """

    name: str
    kind: Kind
    package_manager: PackageManager | None
    entry: str | None
    base_image: str
    scripts: Scripts
    env: dict[str, str]
    resources: Resources
    config: dict[str, Any]
    warnings: list[str]
    project_dir: str

    def document(self) -> dict[str, Any]:
        """``iii worker validate --json``'s document and ``worker::validate``'s result, a contract
        other tools rely on: every field but ``project_dir``, in this order."""
        return {
            "name": self.name,
            "kind": self.kind,
            "package_manager": self.package_manager,
            "entry": self.entry,
            "base_image": self.base_image,
            "scripts": {
                "setup": self.scripts.setup,
                "install": self.scripts.install,
                "start": self.scripts.start,
            },
            "env": dict(self.env),
            "resources": {"memory": self.resources.memory, "cpus": self.resources.cpus},
            "config": self.config,
            "warnings": list(self.warnings),
        }


def validate_worker_name(name: str) -> str:
    """Return ``name`` if it is a valid worker name, else raise :class:`ManifestError`.

    A worker name becomes a directory (``$III_HOME/managed/<name>/``), hence the strict rule
    ``[A-Za-z0-9][A-Za-z0-9._-]{0,62}``.

    >>> validate_worker_name("my-worker")
    'my-worker'
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ManifestError(None, None, None, invalid_name_message("worker name", name))
    return name


def invalid_name_message(field: str, value: object) -> str:
    return (
        f"{field} must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a "
        f"letter or digit (it becomes a directory name), got {describe(value)}"
    )


def sanitize_worker_name(text: str) -> str:
    """Turn a directory basename into a valid worker name (used when there is no manifest).

    Characters outside ``[A-Za-z0-9._-]`` become ``-``; leading separators and trailing ``-`` are
    dropped; the result is cut to 63 characters; an empty result becomes ``worker``.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    cleaned = re.sub(r"^[._-]+", "", cleaned)[:63].rstrip("-")
    return cleaned if _NAME_RE.fullmatch(cleaned) else "worker"
