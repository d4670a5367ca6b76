"""What the user reads speaks of the product only: no help text, error message or written
service file cites the project's SPEC, which the user does not have (code comments and
docstrings of internal code may)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from client.commands import app

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("client", "daemon", "manifests", "vmm_ffi")
CITATION = ("SPEC §", "SPEC.md", "(§")


def help_texts(command: Any, path: str) -> Iterator[tuple[str, str]]:
    """(where, text) for every help the typer tree shows: commands, groups, options (typer's
    own click objects, walked by their attributes)."""
    for kind in ("help", "short_help", "epilog"):
        yield f"{path} {kind}", getattr(command, kind) or ""
    for param in command.params:
        yield f"{path} {param.name}", getattr(param, "help", None) or ""
    for name, sub in getattr(command, "commands", {}).items():  # a group's commands
        yield from help_texts(sub, f"{path} {name}")


def test_no_help_text_cites_the_spec() -> None:
    texts = list(help_texts(get_command(app), "iii"))
    assert len(texts) > 50  # the whole tree was walked
    cited = [(where, text) for where, text in texts if any(c in text for c in CITATION)]
    assert cited == []


@pytest.mark.parametrize("argv", [("worker", "--help"), ("worker", "export", "--help")])
def test_the_help_a_user_reads_does_not_cite_the_spec(argv: tuple[str, ...]) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([str(Path(sys.executable).with_name("iii")), *argv], env=env,
                         capture_output=True, text=True, check=False, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "export" in out.stdout and "SPEC" not in out.stdout and "§" not in out.stdout


def message_strings(path: Path) -> Iterator[tuple[int, str]]:
    """String literals of ``path`` that are not docstrings: messages, help, file templates."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            docstrings.add(id(node.body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_message_or_written_file_cites_the_spec() -> None:
    files = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 50
    cited = [f"{p.relative_to(REPO)}:{line}" for p in files for line, text in message_strings(p)
             if any(c in text for c in CITATION)]
    assert cited == []
    for unit in (REPO / "systemd").glob("iii-daemon.*"):
        assert "SPEC" not in unit.read_text(), unit
