"""Reading ``iii.worker.yaml`` safely and parsing it with ruamel (positions kept).

Every way a file can be unusable — a symlink out of the project, a directory or fifo, more than
64 KiB, invalid UTF-8, not YAML, several documents, ruamel's own construction failures — ends as one
:class:`ManifestError` with the best position available.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from manifests.errors import ManifestError
from manifests.spec import MANIFEST_FILENAME, MAX_MANIFEST_BYTES


def find_manifest(project: Path) -> Path | None:
    """The project's manifest path, or ``None`` when there is none.

    Raises :class:`ManifestError` when the manifest is a symlink leaving the project, a broken
    symlink, or not a regular file (opening a fifo would hang).
    """
    path = project / MANIFEST_FILENAME
    try:
        link = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(MANIFEST_FILENAME, None, None, f"cannot read it: {exc.strerror}") from exc
    if stat.S_ISLNK(link.st_mode):
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(project.resolve()):
            raise ManifestError(
                MANIFEST_FILENAME, None, None,
                f"is a symlink pointing outside the project (to {target}); "
                "copy the manifest into the project instead",
            )
        if not target.exists():
            raise ManifestError(MANIFEST_FILENAME, None, None, "is a broken symlink")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ManifestError(MANIFEST_FILENAME, None, None, f"cannot read it: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise ManifestError(MANIFEST_FILENAME, None, None, "is not a regular file")
    return path


def read_manifest_text(path: Path) -> str:
    """The manifest's text: at most 64 KiB of UTF-8 (a leading BOM is dropped)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(MANIFEST_FILENAME, None, None, f"cannot read it: {exc.strerror}") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        size = path.stat().st_size
        raise ManifestError(
            MANIFEST_FILENAME, None, None,
            f"the file is {size} bytes; a manifest may be at most {MAX_MANIFEST_BYTES} bytes (64 KiB)",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position_of_byte(data, exc.start)
        raise ManifestError(
            MANIFEST_FILENAME, line, column,
            f"not valid UTF-8 text (byte 0x{data[exc.start]:02x}); save the manifest as UTF-8",
        ) from exc
    return text.removeprefix("\ufeff")


def parse_yaml(text: str) -> Any:
    """Parse one YAML document with ruamel's round-trip loader (which keeps line:column)."""
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    with map_yaml_errors(text):
        return yaml.load(text)


@contextlib.contextmanager
def map_yaml_errors(text: str) -> Iterator[None]:
    """Translate ruamel's exceptions (and the plain ones it lets escape) into ManifestError."""
    try:
        yield
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise ManifestError(MANIFEST_FILENAME, line, column, _marked_message(exc)) from exc
    except ReaderError as exc:
        line, column = _position_of_char(text, exc.position)
        raise ManifestError(
            MANIFEST_FILENAME, line, column,
            f"not valid YAML: unacceptable character {exc.character!r} (control characters and "
            "binary data are not allowed)",
        ) from exc
    except YAMLError as exc:
        raise ManifestError(MANIFEST_FILENAME, None, None, f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise ManifestError(
            MANIFEST_FILENAME, None, None, "not valid YAML: the document is nested too deeply"
        ) from exc
    except (ValueError, KeyError, TypeError, OverflowError, AttributeError, IndexError) as exc:
        # ruamel lets these escape for values its constructors reject (`!!int abc`,
        # `2020-02-30`, `!!bool maybe`, an integer of more than 4300 digits).
        raise ManifestError(
            MANIFEST_FILENAME, None, None, f"not valid YAML: a value cannot be read ({exc})"
        ) from exc


def _marked_message(exc: MarkedYAMLError) -> str:
    problem = (exc.problem or "").strip()
    if problem.startswith("found duplicate key"):
        # ruamel's text is several lines with a link; ours says what to do.
        key = problem.split('"')[1] if problem.count('"') >= 2 else "?"
        first = exc.context_mark.line + 1 if exc.context_mark is not None else None
        where = f" (the mapping starts at line {first})" if first is not None else ""
        return f"duplicate key {key!r}{where}; each key may appear only once"
    context = (exc.context or "").strip()
    text = f"{context}: {problem}" if context and problem else (problem or context or str(exc))
    return f"not valid YAML: {text}"


def _position_of_byte(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = len(before) - (before.rfind(b"\n") + 1) + 1
    return line, column


def _position_of_char(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return line, column
