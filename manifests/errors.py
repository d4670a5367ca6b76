"""Errors of the manifests package.

Hierarchy (one base, details in the message)::

    ValueError
    └── ManifestError          a project or its manifest cannot be turned into a WorkerSpec
        └── InvalidReference   a string is not a valid image reference (no file, no position)

The loader translates an ``InvalidReference`` into a ``ManifestError`` at the
``runtime.base_image`` value's position.
"""

from __future__ import annotations


class ManifestError(ValueError):
    """Raised when a project directory or its ``iii.worker.yaml`` is unusable.

    ``file`` is the offending file relative to the project (``iii.worker.yaml``, ``package.json``)
    or ``None`` for errors about the directory itself (missing, undetectable). ``line`` and
    ``column`` are 1-based and ``None`` when no position applies. ``message`` is one line that
    names the field and the value and says how to fix it.

    >>> str(ManifestError("iii.worker.yaml", 4, 9, "resources.memory must be ..."))
    'iii.worker.yaml:4:9: resources.memory must be ...'
    """

    def __init__(
        self, file: str | None, line: int | None, column: int | None, message: str
    ) -> None:
        # One line, always: a message is printed after "error: " and sent as JSON-RPC text.
        self.file = file
        self.line = line
        self.column = column if line is not None else None
        self.message = " ".join(message.split())
        super().__init__(self._render())

    def _render(self) -> str:
        if self.file is None:
            return self.message
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[type[ManifestError], tuple[object, ...]]:
        return (type(self), (self.file, self.line, self.column, self.message))


class InvalidReference(ManifestError):
    """Raised when a string is not a valid image reference; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(None, None, None, message)

    def __reduce__(self) -> tuple[type[ManifestError], tuple[object, ...]]:
        return (type(self), (self.message,))
