"""Project detection from well-known files (SPEC §4) and reading what inference needs from them.

Rules, first match wins: package.json + bun.lock(b) → bun; package.json → typescript with the
package manager of its lockfile; Cargo.toml → rust; pyproject.toml or requirements.txt → python.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from manifests.errors import ManifestError

# package.json and Cargo.toml are read whole; anything bigger than this is not a project file.
MAX_PROJECT_FILE_BYTES = 1024 * 1024


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    """The kind a project looks like, and its package manager (node kinds only)."""

    kind: str
    package_manager: str | None


def detect_project(project: Path) -> Detection | None:
    """Apply SPEC §4's detection rules in order; ``None`` when nothing matches."""
    if _is_file(project / "package.json"):
        if _is_file(project / "bun.lock") or _is_file(project / "bun.lockb"):
            return Detection(kind="bun", package_manager="bun")
        if _is_file(project / "pnpm-lock.yaml"):
            return Detection(kind="typescript", package_manager="pnpm")
        if _is_file(project / "yarn.lock"):
            return Detection(kind="typescript", package_manager="yarn")
        return Detection(kind="typescript", package_manager="npm")
    if _is_file(project / "Cargo.toml"):
        return Detection(kind="rust", package_manager=None)
    if _is_file(project / "pyproject.toml") or _is_file(project / "requirements.txt"):
        return Detection(kind="python", package_manager=None)
    return None


def undetectable_message(project: Path) -> str:
    return (
        f"cannot detect the project type of {project}: add iii.worker.yaml, or a package.json, "
        "pyproject.toml, requirements.txt or Cargo.toml"
    )


def package_json_scripts(project: Path) -> dict[str, str]:
    """``scripts`` of the project's package.json ({} when there is none).

    Raises :class:`ManifestError` naming package.json (with line:column) when it is not JSON.
    """
    path = project / "package.json"
    if not _is_file(path):
        return {}
    text = _read_text(path, "package.json")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            "package.json", exc.lineno, exc.colno, f"not valid JSON: {exc.msg}; fix package.json"
        ) from exc
    except RecursionError as exc:
        raise ManifestError("package.json", None, None, "not valid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise ManifestError("package.json", 1, 1, "must be a JSON object")
    scripts = data.get("scripts")
    if not isinstance(scripts, dict):
        return {}
    return {k: v for k, v in scripts.items() if isinstance(v, str) and v.strip()}


def cargo_binary_name(project: Path) -> str | None:
    """The first ``[[bin]] name`` of Cargo.toml, else ``[package] name``; ``None`` if neither."""
    path = project / "Cargo.toml"
    if not _is_file(path):
        return None
    text = _read_text(path, "Cargo.toml")
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line, column = (int(found[1]), int(found[2])) if found else (None, None)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)) or "invalid TOML"
        raise ManifestError("Cargo.toml", line, column, f"not valid TOML: {reason}") from exc
    bins = data.get("bin")
    if isinstance(bins, list):
        for entry in bins:
            if isinstance(entry, dict) and _usable_name(entry.get("name")):
                return str(entry["name"])
    package = data.get("package")
    if isinstance(package, dict) and _usable_name(package.get("name")):
        return str(package["name"])
    return None


def _usable_name(value: object) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(r"[A-Za-z0-9_.-]+", value))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _read_text(path: Path, shown: str) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PROJECT_FILE_BYTES + 1)
    except OSError as exc:
        raise ManifestError(shown, None, None, f"cannot read it: {exc.strerror}") from exc
    if len(data) > MAX_PROJECT_FILE_BYTES:
        raise ManifestError(shown, None, None, "is larger than 1 MiB")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ManifestError(shown, None, None, "is not valid UTF-8 text") from exc
