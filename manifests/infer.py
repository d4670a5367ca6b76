"""Script inference (SPEC §4): each missing script is inferred on its own.

``None`` means "not set, infer it"; ``""`` (set explicitly) means "skip" and is kept as is.
Entries are shell-quoted, since scripts run under ``/bin/sh -c``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import NoReturn

from manifests.detect import cargo_binary_name, package_json_scripts
from manifests.errors import ManifestError

PYTHON_START_CANDIDATES: tuple[str, ...] = ("worker.py", "main.py", "app.py", "src/main.py")
_NODE_KINDS = ("typescript", "javascript", "bun")


def infer_setup() -> str:
    """Setup is empty: the default images already carry their toolchains."""
    return ""


def infer_install(kind: str, package_manager: str | None, project: Path) -> str:
    if kind == "bun" or package_manager == "bun":
        return "bun install"
    if kind in _NODE_KINDS:
        return f"{package_manager or 'npm'} install"
    if kind == "python":
        if (project / "requirements.txt").is_file():
            return "pip install -r requirements.txt"
        if (project / "pyproject.toml").is_file():
            return "pip install ."
        return ""
    if kind == "rust":
        return "cargo build --release"
    raise AssertionError(f"unhandled kind {kind!r}")


def infer_start(
    kind: str,
    package_manager: str | None,
    entry: str | None,
    project: Path,
    *,
    manifest_file: str | None,
) -> str:
    """The start command, or :class:`ManifestError` naming what to add."""
    uses_bun = kind == "bun" or package_manager == "bun"
    if kind == "rust":
        binary = cargo_binary_name(project)
        if binary is None:
            _cannot_infer(kind, "Cargo.toml has no [[bin]] or [package] name", manifest_file)
        return f"./target/release/{shlex.quote(binary)}"
    if entry is not None:
        quoted = shlex.quote(entry)
        if uses_bun:
            return f"bun run {quoted}"
        if kind == "typescript":
            if package_manager == "pnpm":
                return f"pnpm exec tsx {quoted}"
            if package_manager == "yarn":
                return f"yarn exec tsx {quoted}"
            return f"npx tsx {quoted}"
        if kind == "javascript":
            return f"node {quoted}"
        if kind == "python":
            return f"python {quoted}"
        raise AssertionError(f"unhandled kind {kind!r}")
    if kind in _NODE_KINDS:
        scripts = package_json_scripts(project)
        pm = "bun" if uses_bun else (package_manager or "npm")
        if "start" in scripts:
            return "bun run start" if pm == "bun" else f"{pm} start"
        if "dev" in scripts:
            return f"{pm} run dev"
        _cannot_infer(kind, "package.json has no scripts.start or scripts.dev", manifest_file)
    if kind == "python":
        for candidate in PYTHON_START_CANDIDATES:
            if (project / candidate).is_file():
                return f"python {candidate}"
        _cannot_infer(kind, f"none of {', '.join(PYTHON_START_CANDIDATES)} exists", manifest_file)
    raise AssertionError(f"unhandled kind {kind!r}")


def _cannot_infer(kind: str, why: str, manifest_file: str | None) -> NoReturn:
    where = "in iii.worker.yaml" if manifest_file else "in an iii.worker.yaml"
    raise ManifestError(
        manifest_file, None, None,
        f"cannot infer the start command of this {kind} project ({why}): "
        f"add runtime.entry or scripts.start {where}",
    )
