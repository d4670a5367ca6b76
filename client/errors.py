"""Errors the CLI and client library raise; JSON-RPC codes map back to them (containerd ToNative).

    CliError                  anything the CLI reports as ``error: …`` (+ ``hint: …``), exit 1
    ├── DaemonUnavailable     no daemon answers and none could be started
    ├── ProtocolError         the daemon's answer is not valid JSON-RPC
    ├── ServiceError          the service manager cannot install, remove or query the daemon
    ├── ScaffoldError         ``worker init`` cannot use the directory or the name
    └── RpcError              the daemon answered with a JSON-RPC error (``code``, ``data``)
        ├── InvalidRequest, MethodNotFound, InvalidParams, InternalError   (-32600…-32603)
        ├── NotFound, AlreadyExists, InvalidProject, ImageError,          (-32001…-32004)
        ├── IsolationUnavailable, ScriptFailed, Conflict, InvalidState,   (-32005…-32008)
        └── Busy                                                          (-32009)
"""

from __future__ import annotations

from typing import Any

from client.protocol.constants import ErrorCode

__all__ = [
    "AlreadyExists", "Busy", "CliError", "Conflict", "DaemonUnavailable", "ImageError",
    "InternalError", "InvalidParams", "InvalidProject", "InvalidRequest", "InvalidState",
    "IsolationUnavailable", "MethodNotFound", "NotFound", "ProtocolError", "RpcError",
    "ScaffoldError", "ScriptFailed", "ServiceError", "from_rpc_error",
]


class CliError(Exception):
    """An error shown to the user as one ``error:`` line and an optional ``hint:`` line."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


class DaemonUnavailable(CliError):
    """Raised when no daemon answers on the socket and autostart is off or failed."""


class ProtocolError(CliError):
    """Raised when the daemon's reply is not a valid JSON-RPC response."""


class RpcError(CliError):
    """Raised when the daemon answers a request with a JSON-RPC error."""

    code: int = ErrorCode.INTERNAL

    def __init__(self, message: str, data: Any = None, code: int | None = None) -> None:
        super().__init__(message, _hint_from(data))
        self.data = data
        if code is not None:
            self.code = code


class InvalidRequest(RpcError):
    code = ErrorCode.INVALID_REQUEST


class MethodNotFound(RpcError):
    code = ErrorCode.METHOD_NOT_FOUND


class InvalidParams(RpcError):
    code = ErrorCode.INVALID_PARAMS


class InternalError(RpcError):
    code = ErrorCode.INTERNAL


class NotFound(RpcError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(RpcError):
    code = ErrorCode.ALREADY_EXISTS


class InvalidProject(RpcError):
    """``data``: file, line, column."""

    code = ErrorCode.INVALID_PROJECT


class ImageError(RpcError):
    code = ErrorCode.IMAGE_ERROR


class IsolationUnavailable(RpcError):
    """``data``: reason, hint."""

    code = ErrorCode.ISOLATION_UNAVAILABLE


class ScriptFailed(RpcError):
    """``data``: script, exit_code, output_tail."""

    code = ErrorCode.SCRIPT_FAILED


class Conflict(RpcError):
    code = ErrorCode.CONFLICT


class InvalidState(RpcError):
    code = ErrorCode.INVALID_STATE


class Busy(RpcError):
    code = ErrorCode.BUSY


_BY_CODE: dict[int, type[RpcError]] = {
    cls.code: cls for cls in (
        InvalidRequest, MethodNotFound, InvalidParams, InternalError, NotFound, AlreadyExists,
        InvalidProject, ImageError, IsolationUnavailable, ScriptFailed, Conflict, InvalidState,
        Busy)
}


def _hint_from(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("hint"), str):
        return str(data["hint"])
    return None


def from_rpc_error(error: Any) -> RpcError:
    """Build the exception for a JSON-RPC ``error`` object (unknown codes → plain RpcError)."""
    if not isinstance(error, dict):
        return InternalError(f"malformed error from the daemon: {error!r}")
    code = error.get("code")
    message = str(error.get("message") or "unknown error")
    data = error.get("data")
    cls = _BY_CODE.get(code) if isinstance(code, int) else None
    if cls is None:
        return RpcError(message, data, code=code if isinstance(code, int) else None)
    return cls(message, data)


class ServiceError(CliError):
    """Raised with a one-line message when the service cannot be installed, removed or queried
    (no service manager, a manager command failed, an unsupported platform or path)."""


class ScaffoldError(CliError):
    """Raised when ``worker init``'s target directory or name cannot be used (one line, with
    the fix)."""
