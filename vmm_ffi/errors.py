"""Errors of the launcher side. Everything here derives from ``LauncherError``.

    LauncherError
    ├── InvalidParams      the LaunchParams are malformed or unusable (launcher exits 2)
    ├── SetupFailed        a namespace/mount/cgroup step failed while building the sandbox
    ├── VmmError           a libkrun call returned a negative errno
    ├── LibraryNotFound    libkrun could not be loaded
    ├── LaunchFailed       spawn_launcher: the launcher died/timed out before answering
    │   └── AlreadyRunning another launcher already runs this sandbox (state dir locked)
    └── BackendUnavailable the requested isolation backend cannot run on this host
"""

from __future__ import annotations

import errno as _errno
import os


class LauncherError(Exception):
    """Base of every error raised by ``vmm_ffi``."""


class InvalidParams(LauncherError):
    """Raised when launch params fail to decode or make no sense (bad path, empty argv)."""


class SetupFailed(LauncherError):
    """Raised when a sandbox cannot be built: ``step`` names what failed (``mount overlay``)."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step, self.detail = step, detail


def describe_errno(code: int) -> str:
    """``-2`` or ``2`` -> ``"ENOENT"`` (the symbolic name, or the number when unknown)."""
    return _errno.errorcode.get(abs(code), str(abs(code)))


class VmmError(LauncherError):
    """Raised when a ``krun_*`` call returns a negative errno: names the call and the errno.

    >>> str(VmmError("krun_set_root", -2))
    'krun_set_root failed: -2 (ENOENT: No such file or directory)'
    """

    def __init__(self, call: str, errno: int) -> None:
        code = -abs(errno)
        super().__init__(
            f"{call} failed: {code} ({describe_errno(code)}: {os.strerror(abs(code))})")
        self.call, self.errno = call, code


class LibraryNotFound(LauncherError):
    """Raised when libkrun cannot be loaded; ``hint`` says how to install it."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(f"{reason}; {hint}")
        self.reason, self.hint = reason, hint


class LaunchFailed(LauncherError):
    """Raised by ``spawn_launcher`` when the launcher exits or times out before answering.

    ``stderr_tail`` holds the last lines the launcher wrote to its log.
    """

    def __init__(self, message: str, exit_code: int | None = None,
                 stderr_tail: list[str] | None = None) -> None:
        tail = stderr_tail or []
        full = message if not tail else message + "\n" + "\n".join(tail)
        super().__init__(full)
        self.exit_code, self.stderr_tail = exit_code, tail


class BackendUnavailable(LauncherError):
    """Raised by ``select_backend`` when the requested backend cannot run here."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason if hint is None else f"{reason} ({hint})")
        self.reason, self.hint = reason, hint


class AlreadyRunning(LaunchFailed):
    """Raised when another launcher already runs this sandbox (its state dir lock is held)."""
