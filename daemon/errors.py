"""Errors the daemon raises; each maps to one JSON-RPC code in ``daemon/api/rpc.py``.

    DaemonError
    ├── NotFound            the named worker or image does not exist
    ├── AlreadyExists       a worker of that name is already registered
    ├── InvalidArgument     a request is well-formed but makes no sense (bad path, bad value)
    │   └── InvalidProject  the project or its manifest is invalid (file, line, column)
    ├── ImageError          pulling, verifying or extracting an image failed
    ├── Unavailable         an isolation backend (or another resource) is not usable here
    ├── ScriptFailed        setup or install exited non-zero
    ├── Conflict            another operation on the same worker is in progress
    ├── InvalidState        the operation is not allowed in the worker's current state/type
    │   └── ConfigError     config.yaml cannot be parsed or has a bad shape (file:line:col)
    ├── Internal            a bug or an unexpected host failure
    ├── SettingsError       daemon.yaml or a settings variable is invalid (start-up only)
    └── ListenerError       the daemon cannot own its socket (start-up only)
"""

from __future__ import annotations


class DaemonError(Exception):
    """Base of every error the daemon reports to clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def data(self) -> dict[str, object] | None:
        """Structured details sent as the JSON-RPC error's ``data`` (never host tracebacks)."""
        return None


class NotFound(DaemonError):
    """Raised when a named worker or image does not exist."""


class AlreadyExists(DaemonError):
    """Raised when adding a worker whose name is taken (without ``--force``)."""


class InvalidArgument(DaemonError):
    """Raised when a request's values are well-formed but unusable."""


class InvalidProject(InvalidArgument):
    """Raised when a project cannot be detected or its manifest is invalid."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        super().__init__(message)
        self.file, self.line, self.column = file, line, column

    def data(self) -> dict[str, object] | None:
        return {"file": self.file, "line": self.line, "column": self.column}


class ImageError(DaemonError):
    """Raised when an image cannot be resolved, pulled, verified or extracted."""

    def __init__(self, ref: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"image {ref}: {message}")
        self.ref, self.hint = ref, hint

    def data(self) -> dict[str, object] | None:
        return None if self.hint is None else {"ref": self.ref, "hint": self.hint}


class Unavailable(DaemonError):
    """Raised when an isolation backend cannot be used here; ``hint`` says how to fix it."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason if hint is None else f"{reason} ({hint})")
        self.reason, self.hint = reason, hint

    def data(self) -> dict[str, object] | None:
        return {"reason": self.reason, "hint": self.hint}


class ScriptFailed(DaemonError):
    """Raised when a worker's setup or install script exits non-zero, or left the sandbox
    unable to run the worker (``problem`` then says how: "deleted /workspace, ...")."""

    def __init__(self, script: str, exit_code: int, output_tail: list[str],
                 problem: str | None = None, hint: str | None = None) -> None:
        message = f"{script} script {problem or f'failed with exit code {exit_code}'}"
        super().__init__(message if hint is None else f"{message}: {hint}")
        self.script, self.exit_code, self.output_tail = script, exit_code, output_tail

    def data(self) -> dict[str, object] | None:
        return {"script": self.script, "exit_code": self.exit_code,
                "output_tail": self.output_tail}


class Conflict(DaemonError):
    """Raised when another operation on the same worker is already in progress."""


class InvalidState(DaemonError):
    """Raised when an operation is not allowed in the worker's state or for its type."""


class Internal(DaemonError):
    """Raised for unexpected failures; the message is generic, details go to the log."""


class ConfigError(InvalidState):
    """Raised when config.yaml cannot be parsed or has a bad shape (and so is never written).

    ``str(err)`` is one line: ``/path/config.yaml:3:7: workers[1].name must be a string``.
    It is an :class:`InvalidState`: every write is refused until the file is fixed.
    """

    def __init__(self, file: str, line: int | None, column: int | None, problem: str) -> None:
        where = file if line is None else f"{file}:{line}:{column or 1}"
        super().__init__(f"{where}: {problem}")
        self.file, self.line, self.column, self.problem = file, line, column, problem

    def data(self) -> dict[str, object] | None:
        return {"file": self.file, "line": self.line, "column": self.column}


class SettingsError(DaemonError):
    """Raised when daemon.yaml or a settings environment variable is invalid (one line)."""


class ListenerError(DaemonError):
    """Raised when the daemon cannot own its socket (another daemon serves it, bad path)."""
