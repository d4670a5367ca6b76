"""``iii worker validate PATH [--json]``: resolve a project's worker spec without a daemon.

The JSON shape is a contract other tools rely on (issue 2):
``{"name", "kind", "package_manager", "entry", "base_image", "scripts": {"setup", "install",
"start"}, "env", "resources": {"memory", "cpus"}, "config", "warnings": [...]}``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import msgspec

from manifests import ManifestError, WorkerSpec, load_worker


def run_validate(path: Path, as_json: bool) -> int:
    """Print the resolved spec of ``path`` (or one ``error: ...`` line); return the exit code."""
    try:
        spec = load_worker(path)
    except ManifestError as exc:
        print(f"error: {_located(path, exc)}", file=sys.stderr)
        return 1
    if as_json:
        sys.stdout.write(msgspec.json.encode(spec.document()).decode() + "\n")
        return 0
    _print_human(spec, sys.stdout)
    for warning in spec.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _located(path: Path, exc: ManifestError) -> str:
    # Show the file as the user can open it from where they ran the command.
    if exc.file is None:
        return str(exc)
    shown = ManifestError(str(path / exc.file), exc.line, exc.column, exc.message)
    return str(shown)


def _print_human(spec: WorkerSpec, out: TextIO) -> None:
    def row(label: str, value: str) -> None:
        out.write(f"{label + ':':<17}{value}\n")

    row("name", spec.name)
    row("kind", spec.kind)
    row("package manager", spec.package_manager or "-")
    row("entry", spec.entry or "-")
    row("base image", spec.base_image)
    cpus = spec.resources.cpus
    row("resources", f"{spec.resources.memory} MiB memory, {cpus} cpu{'s' if cpus != 1 else ''}")
    row("project", spec.project_dir)
    out.write("scripts:\n")
    for script in ("setup", "install", "start"):
        command = getattr(spec.scripts, script)
        # Multi-line scripts (YAML block scalars) stay aligned under their first line.
        shown = command.rstrip("\n").replace("\n", "\n" + " " * 11) if command else "(none)"
        out.write(f"  {script + ':':<9}{shown}\n")
    out.write("env:" + ("\n" if spec.env else " (none)\n"))
    out.writelines(f"  {key}={value}\n" for key, value in spec.env.items())
    out.write("config:" + ("\n" if spec.config else " (none)\n"))
    out.writelines(
        f"  {key}: {msgspec.json.encode(value).decode()}\n" for key, value in spec.config.items()
    )
